//! Helpers shared by the integration tests: fixtures, running the binary, oracles, byte diffs.

#![allow(clippy::indexing_slicing)] // test code: a panic is a failed test, with its message
#![allow(dead_code)] // each test module uses a different subset

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The repository's `fixtures/` directory.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// A scratch directory removed when dropped.
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("imgstream-test-").tempdir().expect("create temp dir")
}

/// Decompresses `fixtures/<name>.img.zst` into `dir` and returns the image path.
pub fn fixture(name: &str, dir: &Path) -> PathBuf {
    let compressed = fixtures_dir().join(format!("{name}.img.zst"));
    assert!(compressed.exists(), "missing fixture {} (run fixtures/make-fixtures.sh)", compressed.display());
    let image = dir.join(format!("{name}.img"));
    run_ok(Command::new("zstd").args(["-q", "-d", "-f", "-o"]).arg(&image).arg(&compressed));
    image
}

/// Names of the committed fixtures whose name starts with `prefix`, sorted.
pub fn fixtures_with_prefix(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("read fixtures/")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".img.zst").map(str::to_owned))
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no fixtures named {prefix}*");
    names
}

/// The imgstream binary under test.
pub fn imgstream() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_imgstream"));
    command.env_remove("RUST_BACKTRACE").stdin(Stdio::null());
    command
}

/// Runs imgstream with `args`, expecting success; returns stdout.
pub fn imgstream_ok(args: &[&str]) -> Vec<u8> {
    run_ok(imgstream().args(args)).stdout
}

/// Runs a command, panicking with its command line and stderr unless it succeeds.
pub fn run_ok(command: &mut Command) -> Output {
    let output = command.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed with {}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs a command that must fail with exit status `code`; returns its stderr.
pub fn run_fails(command: &mut Command, code: i32) -> String {
    let output = command.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(code), "{command:?}: wrong exit status; stderr:\n{stderr}");
    stderr
}

/// True if `tool` is on PATH. When it is not: panics under `CI=true` (CI must run every
/// oracle), else prints a visible skip message and returns false.
pub fn have_tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true but the oracle tool `{tool}` is missing");
        announce_skip(&format!("`{tool}` is not installed (the README's test command installs it)"));
    }
    found
}

/// True if running as root (loop devices, mounts). Like `have_tool`, fails under `CI=true`.
pub fn is_root() -> bool {
    let root = nix_is_root();
    if !root {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true but tests are not running as root");
        announce_skip("needs root");
    }
    root
}

/// Prints "SKIPPED: why" where it is seen: straight to stderr, because the test harness
/// captures `eprintln!` of a passing test (and a skipping test passes).
fn announce_skip(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

fn nix_is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// SHA-256 of a file, as hex.
pub fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Asserts two images are byte-identical; on mismatch, names the first differing offset and
/// shows both sides of that 64-byte line.
pub fn assert_same_bytes(what: &str, actual: &[u8], expected: &[u8]) {
    if actual == expected {
        return;
    }
    assert_eq!(actual.len(), expected.len(), "{what}: length differs");
    let first = actual.iter().zip(expected).position(|(a, b)| a != b).unwrap_or(0);
    let line = first / 64 * 64;
    let end = (line + 64).min(actual.len());
    let differing = actual.iter().zip(expected).filter(|(a, b)| a != b).count();
    panic!(
        "{what}: {differing} bytes differ, first at byte {first} (0x{first:x})\n actual:   {:?}\n expected: {:?}",
        String::from_utf8_lossy(&actual[line..end]),
        String::from_utf8_lossy(&expected[line..end]),
    );
}

/// A shell command on a terminal of its own (script(1) gives it a pty): what it writes is
/// collected as it comes, and keys can be typed at it.
pub struct Terminal {
    script: std::process::Child,
    transcript: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    collector: std::thread::JoinHandle<()>,
}

impl Terminal {
    /// Starts `command` (a shell command line) under `script` with `setup`'s environment.
    pub fn spawn(command: &str, setup: impl FnOnce(&mut Command)) -> Self {
        use std::io::Read;
        let mut script = Command::new("script");
        script.args(["-qfec", command, "/dev/null"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
        setup(&mut script);
        let mut script = script.spawn().expect("start script");
        let transcript = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut terminal = script.stdout.take().unwrap();
        let collected = transcript.clone();
        let collector = std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n @ 1..) = terminal.read(&mut buffer) {
                collected.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        });
        Self { script, transcript, collector }
    }

    /// What the terminal has shown so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.transcript.lock().unwrap()).into_owned()
    }

    /// Waits (30 s at most) until `text` has been shown `times` times.
    pub fn wait_for(&self, text: &str, times: usize) {
        let started = std::time::Instant::now();
        while self.text().matches(text).count() < times {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "never shown {times}x: {text:?} in {:?}",
                self.text()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Types `keys`.
    pub fn type_keys(&mut self, keys: &[u8]) {
        use std::io::Write;
        self.script.stdin.as_mut().unwrap().write_all(keys).unwrap();
    }

    /// Waits for the command to end: its status and the whole transcript.
    pub fn finish(mut self) -> (std::process::ExitStatus, String) {
        let status = self.script.wait().unwrap();
        let text = {
            let Self { collector, transcript, .. } = self;
            collector.join().unwrap();
            String::from_utf8_lossy(&transcript.lock().unwrap()).into_owned()
        };
        (status, text)
    }
}
