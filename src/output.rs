//! Choosing how to write the image to stdout: a sparse regular file, or a stream.

use imgstream_stream::{PipeSink, Sink, SparseFileSink, StreamSink};
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use std::fs::File;
use std::io::{self, IsTerminal, Seek};
use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;

/// The largest pipe buffer an unprivileged process may ask for by default
/// (/proc/sys/fs/pipe-max-size): fewer wake-ups for the consumer.
const PIPE_SIZE: i32 = 1 << 20;

/// A sink for stdout. An empty regular file (not in append mode) gets holes for zero runs; a
/// pipe is enlarged and gets its zero runs spliced; a terminal is refused, since an image is binary.
pub(crate) fn stdout_sink() -> Result<Box<dyn Sink>, crate::Failure> {
    let stdout = io::stdout();
    if stdout.is_terminal() {
        return Err(crate::Failure::usage(
            "refusing to write an image to a terminal: redirect stdout to a file or pipe it to borg",
        ));
    }
    let mut file = File::from(stdout.as_fd().try_clone_to_owned()?);
    let file_type = file.metadata()?.file_type();
    if file_type.is_file() {
        let appending = OFlag::from_bits_truncate(fcntl(&file, FcntlArg::F_GETFL)?).contains(OFlag::O_APPEND);
        if !appending && file.metadata()?.len() == 0 && file.stream_position()? == 0 {
            return Ok(Box::new(SparseFileSink::new(file)));
        }
    } else if file_type.is_fifo() {
        // Advice only: a smaller pipe is slower, not wrong.
        let _ = fcntl(&file, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
        return Ok(Box::new(PipeSink::new(file)));
    }
    Ok(Box::new(StreamSink::new(file)))
}
