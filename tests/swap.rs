//! Linux swap end to end: `imgstream part` on areas made by mkswap over the stamped pattern
//! (fixtures/gen/swap.sh, whose page sizes and sizes are the expectations here). The header
//! page must come out unchanged (swaplabel and blkid, which we did not write, must still read
//! the label and UUID from the output), every swap page zero, and a hibernation image raw.

#![allow(clippy::indexing_slicing)] // test code: a panic is a failed test, with its message

use crate::fat::assert_thread_and_block_size_invariant;
use crate::util::*;
use std::path::Path;
use std::process::Command;

/// `blkid -p -o export`'s KEY=value lines, sorted.
fn blkid(image: &Path) -> Vec<String> {
    let output = run_ok(Command::new("blkid").args(["-p", "-o", "export"]).arg(image));
    let mut lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.starts_with("DEVNAME="))
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

#[test]
fn swap_keeps_the_header_page_and_zeroes_every_swap_page() {
    if !(have_tool("blkid") && have_tool("swaplabel")) {
        return;
    }
    // (fixture, page size given to mkswap, bytes the swap pages cover: the size rounded down
    // to whole pages; fixtures/gen/swap.sh)
    for (name, page, pages_end) in [("swap-4k", 4096, 4 << 20), ("swap-64k", 65536, 4 << 20)] {
        let dir = scratch();
        let image = fixture(name, dir.path());
        let hash = sha256(&image);
        let source = std::fs::read(&image).unwrap();
        let out = imgstream_ok(&["part", image.to_str().unwrap(), "--threads", "1"]);
        assert_eq!(out.len(), source.len());
        assert!(out[..page] == source[..page], "{name}: header page changed");
        assert!(out[page..pages_end].iter().all(|&b| b == 0), "{name}: a swap page is not zero");
        assert!(source[page..pages_end].iter().any(|&b| b != 0), "{name}: the source's pages are already zero");
        assert!(out[pages_end..] == source[pages_end..], "{name}: the tail past the last page changed");
        assert_thread_and_block_size_invariant(name, image.to_str().unwrap(), &out);
        let output_image = dir.path().join("out.img");
        std::fs::write(&output_image, &out).unwrap();
        assert_eq!(blkid(&output_image), blkid(&image), "{name}: blkid reads a different header");
        assert!(blkid(&image).contains(&"TYPE=swap".to_owned()));
        let label = |path: &Path| run_ok(Command::new("swaplabel").arg(path)).stdout;
        assert_eq!(label(&output_image), label(&image));

        let info = String::from_utf8(imgstream_ok(&["info", image.to_str().unwrap()])).unwrap();
        assert!(info.lines().any(|l| l.starts_with("filesystem") && l.ends_with("swap")), "{info}");
        assert!(info.lines().any(|l| l.starts_with("unit") && l.contains(&format!("{page} bytes"))), "{info}");
        assert_eq!(sha256(&image), hash, "{name}: the source changed");
    }
}

#[test]
fn swap_hibernation_image_is_streamed_raw_with_a_warning() {
    if !have_tool("blkid") {
        return;
    }
    let dir = scratch();
    let image = fixture("swapbad-hibernated", dir.path());
    // blkid, independently, calls it a suspend image, not swap.
    assert!(blkid(&image).contains(&"TYPE=swsuspend".to_owned()), "{:?}", blkid(&image));
    let source = std::fs::read(&image).unwrap();
    let output = run_ok(imgstream().args(["part", image.to_str().unwrap()]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("imgstream: warning:") && stderr.contains("hibernation image") && stderr.contains("S1SUSPEND"),
        "{stderr}"
    );
    assert!(output.stdout == source, "a hibernated swap area must be copied raw");
}

/// A recognised format that this version cannot parse (a swap header of version 2) is copied
/// raw under its own name, not as "unknown".
#[test]
fn an_unsupported_swap_version_is_copied_raw_and_still_named_swap() {
    let dir = scratch();
    let image = fixture("swap-4k", dir.path());
    let mut bytes = std::fs::read(&image).unwrap();
    bytes[1024] = 2; // the header's version
    std::fs::write(&image, &bytes).unwrap();
    let output = run_ok(imgstream().arg("part").arg(&image));
    assert_eq!(output.stdout, bytes, "a raw copy");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("imgstream: swap: ") && stderr.contains("copied raw"), "{stderr}");
    let report = String::from_utf8(run_ok(imgstream().args(["info", "--json"]).arg(&image)).stdout).unwrap();
    assert!(report.contains("\"filesystem\": \"swap\""), "{report}");
}
