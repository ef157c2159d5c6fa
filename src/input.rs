//! Where `restore` and `verify` read an image stream: stdin, never a terminal.

use crate::Failure;
use std::fs::File;
use std::io::{self, IsTerminal};
use std::os::fd::AsFd;

/// stdin as a file: unbuffered (blocks are large, and a reader thread needs a `Send` handle),
/// its pipe enlarged so that the producer (borg) runs ahead while a block is handled. A
/// terminal is refused; `example` shows how to pipe a stream in.
pub(crate) fn stdin_stream(example: &str) -> Result<File, Failure> {
    let stdin = io::stdin();
    if stdin.is_terminal() {
        return Err(Failure::usage(format!("refusing to read an image from a terminal: pipe it in ({example})")));
    }
    // Advice only: a smaller pipe is slower, not wrong.
    let _ = nix::fcntl::fcntl(&stdin, nix::fcntl::FcntlArg::F_SETPIPE_SZ(crate::output::PIPE_SIZE));
    let owned = stdin.as_fd().try_clone_to_owned().map_err(|e| Failure::new(format!("stdin: {e}")))?;
    Ok(File::from(owned))
}
