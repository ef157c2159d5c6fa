//! The repository's passphrase, found once per run. borg looks for it in every invocation
//! (`BORG_PASSPHRASE`, then `BORG_PASSCOMMAND`, then `BORG_PASSPHRASE_FD`, then a prompt), and
//! a restore runs borg four times, a failed backup three: without this, the user would type it
//! that often, a pass command would run that often, and a passphrase fd would be empty for
//! every borg run but the first.
//!
//! Once found, the passphrase goes to every borg run as `BORG_PASSPHRASE` (an environment only
//! its owner and root can read), and the other sources are hidden from borg.

use super::borg;
use crate::{Failure, signals};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

static PASSPHRASE: OnceLock<String> = OnceLock::new();

/// How many times a mistyped passphrase may be typed again (borg's own prompt allows three).
const TRIES: usize = 3;

/// Gives `command` the passphrase found by [`find`], if any.
pub(super) fn apply(command: &mut Command) {
    if let Some(passphrase) = PASSPHRASE.get() {
        command.env("BORG_PASSPHRASE", passphrase).env_remove("BORG_PASSCOMMAND").env_remove("BORG_PASSPHRASE_FD");
    }
}

/// Finds the passphrase for `repo` before the first borg run: runs `BORG_PASSCOMMAND` or reads
/// `BORG_PASSPHRASE_FD` once, or, with neither and a terminal, asks once if the repository
/// needs one. `BORG_PASSPHRASE` is left to borg.
pub(super) fn find(repo: &str) -> Result<(), Failure> {
    let found = if std::env::var_os("BORG_PASSPHRASE").is_some() {
        None
    } else if let Some(command) = std::env::var_os("BORG_PASSCOMMAND") {
        Some(from_command(&command.to_string_lossy())?)
    } else if let Some(fd) = std::env::var_os("BORG_PASSPHRASE_FD") {
        Some(from_fd(&fd.to_string_lossy())?)
    } else {
        from_terminal(repo)?
    };
    if let Some(passphrase) = found {
        let _ = PASSPHRASE.set(passphrase);
    }
    Ok(())
}

/// borg drops the final newline of what a pass command prints or an fd holds; so do we.
fn without_newline(mut text: String) -> String {
    while text.ends_with('\n') {
        text.pop();
    }
    text
}

/// `BORG_PASSCOMMAND`'s output (run by the shell, its stderr on ours).
fn from_command(command: &str) -> Result<String, Failure> {
    let output = Command::new("sh")
        .args(["-c", command])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Failure::new(format!("cannot run BORG_PASSCOMMAND: {e}")))?;
    if !output.status.success() {
        return Err(Failure::new(format!("BORG_PASSCOMMAND failed ({})", output.status)));
    }
    String::from_utf8(output.stdout)
        .map(without_newline)
        .map_err(|_| Failure::new("BORG_PASSCOMMAND printed a passphrase that is not UTF-8"))
}

/// What file descriptor `BORG_PASSPHRASE_FD` holds (read through /proc: no raw fd is adopted).
fn from_fd(fd: &str) -> Result<String, Failure> {
    let bad = |e: &dyn std::fmt::Display| Failure::new(format!("BORG_PASSPHRASE_FD={fd}: {e}"));
    let number: u32 = fd.trim().parse().map_err(|_| bad(&"not a file descriptor number"))?;
    let mut text = String::new();
    File::open(format!("/proc/self/fd/{number}"))
        .and_then(|mut file| file.read_to_string(&mut text))
        .map_err(|e| bad(&e))?;
    Ok(without_newline(text))
}

/// Whether borg can open `repo` with `passphrase`: Ok(true), Ok(false) when borg calls it
/// incorrect, Err(borg's last line) for anything else (a missing repository: the caller lets
/// the real borg run report it).
fn opens_with(repo: &str, passphrase: &str) -> Result<bool, String> {
    let output = borg()
        .args(["list", "--short", repo])
        .env("BORG_PASSPHRASE", passphrase)
        .output()
        .map_err(|e| e.to_string())?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.success() {
        true => Ok(true),
        false if stderr.contains("passphrase") && stderr.contains("incorrect") => Ok(false),
        false => Err(stderr.lines().last().unwrap_or_default().to_owned()),
    }
}

/// With a terminal and no other source: learns (with an empty passphrase, which an
/// unencrypted repository ignores) whether `repo` needs one, and if so asks for it.
fn from_terminal(repo: &str) -> Result<Option<String>, Failure> {
    let Ok(tty) = OpenOptions::new().read(true).write(true).open("/dev/tty") else {
        return Ok(None);
    };
    match opens_with(repo, "") {
        Ok(true) => return Ok(Some(String::new())),
        Ok(false) => {}
        Err(_) => return Ok(None),
    }
    for _ in 0..TRIES {
        let passphrase = ask(&tty, &format!("Enter passphrase for {repo}: "))?;
        if opens_with(repo, &passphrase) == Ok(true) {
            return Ok(Some(passphrase));
        }
        let _ = writeln!(&tty, "Incorrect passphrase.");
    }
    Err(Failure::new(format!("{repo}: the passphrase was incorrect {TRIES} times")))
}

/// One line typed on `tty` without echo. Ctrl-C or SIGTERM ends the wait (the terminal gets
/// its echo back either way).
fn ask(tty: &File, prompt: &str) -> Result<String, Failure> {
    let saved = tcgetattr(tty).map_err(|e| Failure::new(format!("/dev/tty: {e}")))?;
    let mut silent = saved.clone();
    silent.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(tty, SetArg::TCSAFLUSH, &silent).map_err(|e| Failure::new(format!("/dev/tty: {e}")))?;
    let typed = (|| -> Result<String, Failure> {
        let mut out = tty;
        out.write_all(prompt.as_bytes())?;
        // A line is there to read once poll says so (canonical mode); between waits, look for
        // a signal: its handler restarts a blocked read, which would wait for Enter.
        loop {
            signals::check("nothing was written")?;
            let mut fds = [PollFd::new(tty.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(200u16)) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => break,
                Err(e) => return Err(Failure::new(format!("/dev/tty: {e}"))),
            }
        }
        let mut line = String::new();
        BufReader::new(tty).read_line(&mut line)?;
        Ok(without_newline(line))
    })();
    let _ = tcsetattr(tty, SetArg::TCSAFLUSH, &saved);
    let _ = writeln!(&*tty);
    typed
}
