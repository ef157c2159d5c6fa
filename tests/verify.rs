//! `imgstream verify`: a stream checked against its source (acceptance 5), for `part` and
//! `--disk` streams: correct streams pass, damaged, short and long ones fail naming offsets.

#![allow(clippy::indexing_slicing)] // test code: a panic is a failed test, with its message

use crate::faults::used_and_elided_pages;
use crate::util::*;
use std::path::Path;
use std::process::{Command, Stdio};

/// `imgstream verify ARGS SOURCE < stream`, through a pipe as from borg: exit status and stderr.
fn verify(args: &[&str], source: &Path, stream: &Path) -> (Option<i32>, String) {
    let script = format!(
        "cat {} | {} verify {} {}",
        stream.display(),
        env!("CARGO_BIN_EXE_imgstream"),
        args.join(" "),
        source.display()
    );
    let output = Command::new("bash").args(["-o", "pipefail", "-c", &script]).stdin(Stdio::null()).output().unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn verify_passes_a_correct_stream_and_names_a_flipped_used_byte_and_a_non_zero_free_byte() {
    let dir = scratch();
    for (name, args) in [("ext-ext4", &["part"][..]), ("ntfs-c4096", &["part"]), ("disk-gpt", &["disk"])] {
        let source = fixture(name, dir.path());
        let flags: &[&str] = if args[0] == "disk" { &["--disk"] } else { &[] };
        let image = imgstream_ok(&[args[0], source.to_str().unwrap()]);
        let stream = dir.path().join(format!("{name}.stream"));
        std::fs::write(&stream, &image).unwrap();
        let (code, stderr) = verify(flags, &source, &stream);
        assert_eq!(code, Some(0), "{name}: {stderr}");
        assert!(stderr.contains("verify: the stream matches"), "{stderr}");

        // One flipped byte in a used block, one non-zero byte in a free one.
        let (used, elided) = used_and_elided_pages(&std::fs::read(&source).unwrap(), &image);
        let used_at = used[used.len() / 2].start as usize + 100;
        let free_at = elided[elided.len() / 2].start as usize + 7;
        let mut damaged = image.clone();
        damaged[used_at] ^= 0x20;
        damaged[free_at] = 0x01;
        std::fs::write(&stream, &damaged).unwrap();
        let (code, stderr) = verify(flags, &source, &stream);
        assert_eq!(code, Some(1), "{name}: {stderr}");
        assert!(stderr.contains(&format!("1 byte(s) at byte {used_at} (0x{used_at:x}) of used bytes")), "{stderr}");
        let free = format!("1 byte(s) at byte {free_at} (0x{free_at:x}) of free space (zeros expected)");
        assert!(stderr.contains(&free), "{stderr}");
        assert!(stderr.contains("error: the stream differs") && stderr.contains("2 difference(s), 2 byte(s) differ"));

        // Exact length: short and long streams fail.
        std::fs::write(&stream, &image[..image.len() - 512]).unwrap();
        let (code, stderr) = verify(flags, &source, &stream);
        assert_eq!(code, Some(1));
        assert!(stderr.contains(&format!("the stream ends at byte {}", image.len() - 512)), "{stderr}");
        let mut long = image.clone();
        long.push(0);
        std::fs::write(&stream, &long).unwrap();
        let (code, stderr) = verify(flags, &source, &stream);
        assert_eq!(code, Some(1));
        assert!(stderr.contains(&format!("longer than the image's {} bytes", image.len())), "{stderr}");
    }
}

#[test]
fn verify_lists_at_most_ten_differences_and_counts_the_rest() {
    let dir = scratch();
    let source = fixture("ext-ext4", dir.path());
    let mut image = imgstream_ok(&["part", source.to_str().unwrap()]);
    for page in 0..25 {
        image[page * 65536 + 3] ^= 0xff;
    }
    let stream = dir.path().join("stream");
    std::fs::write(&stream, &image).unwrap();
    let (code, stderr) = verify(&[], &source, &stream);
    assert_eq!(code, Some(1));
    assert_eq!(stderr.lines().filter(|l| l.contains("difference: 1 byte(s) at byte")).count(), 10, "{stderr}");
    assert!(stderr.contains("difference: ... and 15 more") && stderr.contains("25 difference(s)"), "{stderr}");
}

/// A `disk` stream checked without `--disk` differs wherever `disk` elided (the source is read as
/// one unknown volume); the failure must say that the source is a partitioned disk and that
/// `--disk` checks such a stream, not leave the user to think the backup lost data.
#[test]
fn verify_of_a_partitioned_disk_without_disk_points_to_disk() {
    let dir = scratch();
    let source = fixture("disk-gpt", dir.path());
    let stream = dir.path().join("disk.stream");
    std::fs::write(&stream, imgstream_ok(&["disk", source.to_str().unwrap()])).unwrap();
    let (code, stderr) = verify(&[], &source, &stream);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("is a GPT disk with 4 partition(s): `imgstream verify --disk`"), "{stderr}");
    let (code, stderr) = verify(&["--disk"], &source, &stream);
    assert_eq!(code, Some(0), "{stderr}");
}

/// A stream that cannot be read (stdin a directory: EISDIR, as an I/O error of a file on a
/// network filesystem would be) fails with one line that says reading stdin failed: verify
/// writes nothing.
#[test]
fn verify_names_a_failed_read_of_the_stream() {
    let dir = scratch();
    let source = fixture("ext-ext4", dir.path());
    let output =
        imgstream().arg("verify").arg(&source).stdin(std::fs::File::open(dir.path()).unwrap()).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("stdin: reading the stream failed at byte 0") && !stderr.contains("write"), "{stderr}");
}
