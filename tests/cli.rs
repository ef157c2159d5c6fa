//! Behaviour of the command line that does not depend on a filesystem: raw copies of unknown
//! volumes, exit statuses, a consumer that closes early, refusing read-write mounts.

#![allow(clippy::indexing_slicing)] // test code: a panic is a failed test, with its message

use crate::util::*;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

/// A file of pseudo-random bytes (no filesystem signature anywhere).
fn noise_image(path: &Path, len: usize) {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn an_unknown_volume_is_copied_raw_with_a_warning() {
    let dir = scratch();
    let image = dir.path().join("noise.img");
    noise_image(&image, 3 << 20);
    let before = sha256(&image);
    let output = run_ok(imgstream().args(["part", "--threads", "3"]).arg(&image));
    assert_same_bytes("raw copy", &output.stdout, &std::fs::read(&image).unwrap());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("warning: no known filesystem"), "{stderr}");
    // No partition table either: `disk` would copy it raw just the same.
    assert!(!stderr.contains("imgstream disk"), "{stderr}");
    assert_eq!(sha256(&image), before, "the source changed");
}

/// `part` of a whole partitioned disk copies it raw (no filesystem at its start) and says that
/// `disk` would elide each partition's free space; not with --raw, which asked for raw.
#[test]
fn part_of_a_partitioned_disk_points_to_disk() {
    let dir = scratch();
    let disk = fixture("disk-gpt", dir.path());
    let output = run_ok(imgstream().arg("part").arg(&disk));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is a GPT disk with 4 partition(s): `imgstream disk`"), "{stderr}");
    assert_eq!(output.stdout, std::fs::read(&disk).unwrap(), "a raw copy");
    let output = run_ok(imgstream().args(["part", "--raw"]).arg(&disk));
    assert!(!String::from_utf8_lossy(&output.stderr).contains("imgstream disk"));
}

#[test]
fn a_consumer_that_closes_early_fails_the_run() {
    let dir = scratch();
    let image = dir.path().join("noise.img");
    noise_image(&image, 32 << 20);
    let mut child = imgstream().arg("part").arg(&image).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut first_mib = vec![0u8; 1 << 20];
    child.stdout.take().unwrap().read_exact(&mut first_mib).unwrap(); // then the pipe closes
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("output closed early") && stderr.contains("truncated"), "{stderr}");
    assert_eq!(stderr.lines().filter(|l| l.contains("error:")).count(), 1, "one error line: {stderr}");
}

/// A report that cannot be written (a full disk: /dev/full) fails naming stdout, not with the
/// bare error of the system.
#[test]
fn reports_that_cannot_be_written_fail_naming_stdout() {
    let dir = scratch();
    let disk = fixture("disk-gpt", dir.path());
    for args in [&["map"][..], &["info"], &["info", "--json"]] {
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let stderr = run_fails(imgstream().args(args).arg(&disk).stdout(full), 1);
        assert!(stderr.contains("stdout: write failed: No space left on device"), "{args:?}: {stderr}");
    }
}

/// backup-disk refuses, before anything runs, an archive name it could not clean up after
/// (borg placeholders, a checkpoint's name, '/') and borg options that make a backup that is
/// not whole (files left out, or nothing committed while imgstream reports success).
#[test]
fn backup_disk_refuses_names_and_borg_options_that_break_all_or_nothing() {
    let backup = |name: &str, extra: &[&str]| {
        let mut command = imgstream();
        command.args(["backup-disk", "--repo", "/nonexistent/repo", "--name", name, "/nonexistent/disk.img", "--"]);
        command.args(extra);
        command
    };
    for name in ["", "a/b", "laptop-{now}", "daily.checkpoint", "daily.checkpoint.2"] {
        let stderr = run_fails(&mut backup(name, &[]), 2);
        assert!(stderr.contains("--name"), "{name:?}: {stderr}");
    }
    for option in [
        &["--dry-run"][..],
        &["-n"],
        &["-sn"],
        &["--exclude", "part2.img"],
        &["--exclude=part2.img"],
        &["-e", "x"],
        &["--patterns-from", "f"],
    ] {
        let stderr = run_fails(&mut backup("fine", option), 2);
        assert!(stderr.contains("not whole"), "{option:?}: {stderr}");
    }
    // Allowed through: the source then fails to open (exit 1), after argument parsing.
    for option in [&["--compression", "zstd,3"][..], &["-Cnone"], &["--stats"], &["--chunker-params", "fixed,1048576"]]
    {
        let stderr = run_fails(&mut backup("daily.checkpointed", option), 1);
        assert!(stderr.contains("/nonexistent/disk.img"), "{option:?}: {stderr}");
    }
}

#[test]
fn usage_errors_exit_2_and_runtime_errors_exit_1() {
    let stderr = run_fails(imgstream().args(["part", "--block-size", "3M", "x"]), 2);
    assert!(stderr.contains("power of two"), "{stderr}");
    run_fails(imgstream().arg("part"), 2);
    run_fails(imgstream().args(["part", "--raw", "--force", "x"]), 2);
    let stderr = run_fails(imgstream().args(["part", "/nonexistent/disk.img"]), 1);
    assert!(stderr.starts_with("imgstream: error: /nonexistent/disk.img:"), "{stderr}");
    let stderr = run_fails(imgstream().args(["part", "/dev/null"]), 1);
    assert!(stderr.contains("not a block device or regular file"), "{stderr}");
}

#[test]
fn help_shows_examples_and_exit_statuses() {
    let help = String::from_utf8(imgstream_ok(&["part", "--help"])).unwrap();
    assert!(help.contains("borg create") && help.contains("Exit status"), "{help}");
}

/// A loop device over an image, detached on drop (also when the test panics).
struct Loop(String);
impl Loop {
    fn attach(image: &Path) -> Loop {
        let out = run_ok(Command::new("losetup").args(["-f", "--show"]).arg(image));
        Loop(String::from_utf8(out.stdout).unwrap().trim().to_owned())
    }
}
impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// A mount, unmounted on drop.
struct Mount(std::path::PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn root_a_source_mounted_read_write_is_refused_and_read_only_is_fine() {
    if !is_root() || !have_tool("mkfs.ext4") {
        return;
    }
    let dir = scratch();
    let image = dir.path().join("ext4.img");
    std::fs::write(&image, vec![0u8; 16 << 20]).unwrap();
    run_ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
    let device = Loop::attach(&image);
    let mount_point = dir.path().join("mnt");
    std::fs::create_dir(&mount_point).unwrap();
    run_ok(Command::new("mount").arg(&device.0).arg(&mount_point));
    let mount = Mount(mount_point.clone());

    for source in [device.0.as_str(), image.to_str().unwrap()] {
        let stderr = run_fails(imgstream().args(["part", source]).stdout(Stdio::null()), 1);
        assert!(stderr.contains("mounted read-write"), "{source}: {stderr}");
    }
    run_ok(Command::new("mount").args(["-o", "remount,ro"]).arg(&mount_point));
    run_ok(imgstream().args(["part", &device.0]).stdout(Stdio::null()));
    drop(mount);
}

#[test]
fn an_empty_regular_file_as_stdout_gets_holes_and_append_mode_still_gets_every_byte() {
    use std::os::unix::fs::MetadataExt;
    let dir = scratch();
    let image = fixture("ext-ext4", dir.path());
    let piped = imgstream_ok(&["part", image.to_str().unwrap()]);

    let sparse = dir.path().join("sparse.img");
    run_ok(imgstream().args(["part"]).arg(&image).stdout(std::fs::File::create(&sparse).unwrap()));
    assert_same_bytes("sparse file output", &std::fs::read(&sparse).unwrap(), &piped);
    let metadata = std::fs::metadata(&sparse).unwrap();
    let info: serde_json::Value =
        serde_json::from_slice(&imgstream_ok(&["info", "--json", image.to_str().unwrap()])).unwrap();
    let (used, free) = (info["volume"]["used"].as_u64().unwrap(), info["volume"]["free"].as_u64().unwrap());
    assert!(free > 4 << 20, "the fixture should have free space to test holes with");
    // Free blocks become holes (1 MiB slack for the host filesystem's allocation habits).
    assert!(
        metadata.blocks() * 512 <= used + (1 << 20),
        "{} bytes allocated for {used} used bytes of {}: free space was not left as holes",
        metadata.blocks() * 512,
        metadata.len()
    );

    // `>>` onto an existing file: seeking would be ignored by O_APPEND, so every byte is written.
    let appended = dir.path().join("appended.img");
    std::fs::write(&appended, b"header").unwrap();
    let file = std::fs::OpenOptions::new().append(true).open(&appended).unwrap();
    run_ok(imgstream().args(["part"]).arg(&image).stdout(file));
    let written = std::fs::read(&appended).unwrap();
    assert_eq!(&written[..6], b"header");
    assert_same_bytes("appended output", &written[6..], &piped);
}

#[test]
fn output_file_is_sparse_and_never_overwrites_a_file_or_the_source() {
    use std::os::unix::fs::MetadataExt;
    let dir = scratch();
    let image = fixture("ext-ext4", dir.path());
    let before = sha256(&image);
    let piped = imgstream_ok(&["part", image.to_str().unwrap()]);

    let out = dir.path().join("out.img");
    run_ok(imgstream().args(["part", "-o"]).arg(&out).arg(&image));
    assert_same_bytes("-o output", &std::fs::read(&out).unwrap(), &piped);
    let metadata = std::fs::metadata(&out).unwrap();
    assert!(metadata.blocks() * 512 < metadata.len(), "-o into a new file leaves the free space as holes");

    let stderr = run_fails(imgstream().args(["part", "--output"]).arg(&out).arg(&image), 2);
    assert!(stderr.contains("exists and is not empty"), "{stderr}");
    assert_same_bytes("refused -o leaves the file", &std::fs::read(&out).unwrap(), &piped);
    let stderr = run_fails(imgstream().args(["disk", "-o"]).arg(&image).arg(&image), 2);
    assert!(stderr.contains("is the source"), "{stderr}");
    assert_eq!(sha256(&image), before, "the source changed");

    // A run that fails mid-stream leaves no file behind it.
    let never = dir.path().join("never.img");
    let bad = 9_000_000 / 4096 * 4096..9_000_000 / 4096 * 4096 + 4096;
    let Some(faulty) = crate::faults::FaultySource::new(&image, std::slice::from_ref(&bad)) else { return };
    let stderr = run_fails(imgstream().args(["disk", "-o"]).arg(&never).arg(faulty.path()), 1);
    assert!(stderr.contains("Input/output error"), "{stderr}");
    assert!(!never.exists(), "a failed run left {}", never.display());
}

#[test]
fn quiet_prints_nothing_on_success_and_one_line_on_failure() {
    let dir = scratch();
    let image = fixture("ext-ext4", dir.path());
    let output = run_ok(imgstream().args(["part", "--quiet"]).arg(&image).stdout(Stdio::null()));
    assert!(output.stderr.is_empty(), "{}", String::from_utf8_lossy(&output.stderr));
    // Warnings are quiet too: an unknown volume is copied raw without a word.
    let noise = dir.path().join("noise.img");
    noise_image(&noise, 1 << 20);
    let output = run_ok(imgstream().args(["-q", "disk"]).arg(&noise).stdout(Stdio::null()));
    assert!(output.stderr.is_empty(), "{}", String::from_utf8_lossy(&output.stderr));
    let stderr = run_fails(imgstream().args(["part", "--quiet", "/nonexistent/disk.img"]), 1);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// Validates `document` against `docs/info-schema.json` with Debian's python3-jsonschema (an
/// implementation of JSON Schema we did not write); returns the errors it lists.
fn schema_errors(document: &serde_json::Value) -> String {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/info-schema.json");
    let script = "import json, sys, jsonschema\n\
        schema = json.load(open(sys.argv[1]))\n\
        jsonschema.Draft202012Validator.check_schema(schema)\n\
        for e in jsonschema.Draft202012Validator(schema).iter_errors(json.load(sys.stdin)):\n\
        \x20   print(e.json_path, e.message)\n";
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(&schema)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    serde_json::to_writer(child.stdin.take().unwrap(), document).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "the validator failed");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn info_json_validates_against_the_documented_schema() {
    let have_validator =
        Command::new("/usr/bin/python3").args(["-c", "import jsonschema"]).status().is_ok_and(|s| s.success());
    if !have_validator {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true but python3-jsonschema is missing");
        eprintln!("SKIPPED: python3-jsonschema is not installed");
        return;
    }
    let dir = scratch();
    let noise = dir.path().join("noise.img");
    noise_image(&noise, 1 << 20);
    let sources =
        [fixture("ext-ext4", dir.path()), fixture("disk-gpt", dir.path()), fixture("disk-mbr", dir.path()), noise];
    for source in &sources {
        let info: serde_json::Value =
            serde_json::from_slice(&imgstream_ok(&["info", "--json", source.to_str().unwrap()])).unwrap();
        assert_eq!(info["schema"], 1);
        let errors = schema_errors(&info);
        assert!(errors.is_empty(), "{}: info --json does not match docs/info-schema.json:\n{errors}", source.display());
    }
    let unrecognised: serde_json::Value =
        serde_json::from_slice(&imgstream_ok(&["info", "--json", sources[3].to_str().unwrap()])).unwrap();
    assert!(unrecognised["volume"]["filesystem"].is_null() && unrecognised["table"].is_null(), "{unrecognised}");
    // The validator does reject what the schema forbids.
    let mut broken = unrecognised;
    broken["volume"]["reason"] = serde_json::Value::from("");
    broken["partitions"] = serde_json::json!([{ "index": 0 }]);
    assert!(
        schema_errors(&broken).lines().count() >= 2,
        "the schema should reject an empty reason and a bare partition"
    );
}
