//! Where the image goes: stdout or `--output FILE`, as a sparse regular file or a stream.

use crate::Failure;
use imgstream_blockio::{Source, mounts};
use imgstream_restore::{OpenOptions as TargetOptions, Target};
use imgstream_stream::{PipeSink, Sink, SparseFileSink, StreamSink};
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, IsTerminal, Seek};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The largest pipe buffer an unprivileged process may ask for by default
/// (/proc/sys/fs/pipe-max-size): fewer wake-ups for the consumer.
pub(crate) const PIPE_SIZE: i32 = 1 << 20;

/// The image's destination. A file that this run created is removed again unless the run
/// reaches [`Output::keep`]: a half-written image must not look like a finished one.
pub(crate) struct Output {
    pub(crate) sink: Box<dyn Sink>,
    /// The file this run created, removed unless the run succeeds.
    created: Option<PathBuf>,
    /// "stdout" or the output path, for messages.
    name: String,
}

impl Output {
    /// `--output FILE` when given, else stdout. Writing the image over `source`, or onto a
    /// device too small for its `size` bytes, is refused.
    pub(crate) fn open(path: Option<&Path>, source: &Source, size: u64) -> Result<Self, Failure> {
        let Some(path) = path else { return Ok(Self { sink: stdout_sink()?, created: None, name: "stdout".into() }) };
        let cannot = |e: io::Error| Failure::new(format!("cannot open output {}: {e}", path.display()));
        // Checked before opening: even an open for writing must never touch the source.
        refuse_source("output", path, source)?;
        let existing = match std::fs::metadata(path) {
            Ok(metadata) => Some(metadata),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(cannot(e)),
        };
        if let Some(metadata) = &existing {
            if metadata.file_type().is_file() && metadata.len() > 0 {
                return Err(Failure::usage(format!(
                    "output {} exists and is not empty: remove it first, or write to stdout",
                    path.display()
                )));
            }
            if metadata.file_type().is_block_device() {
                let device = open_device(path, size)?;
                return Ok(Self {
                    sink: sink_for(device).map_err(cannot)?,
                    created: None,
                    name: path.display().to_string(),
                });
            }
        }
        if existing.is_none() {
            crate::signals::remove_on_signal(path);
        }
        let file = OpenOptions::new().write(true).create(true).truncate(false).open(path).map_err(cannot)?;
        // From here on, an error removes a file this run created.
        let created = existing.is_none().then(|| path.to_owned());
        let name = path.display().to_string();
        let mut output = Self { sink: Box::new(StreamSink::new(io::sink())), created, name };
        output.sink = sink_for(file).map_err(cannot)?;
        Ok(output)
    }

    /// A failed run in one line, naming the side that failed: the source for a read error,
    /// the output for a write error or an early close.
    pub(crate) fn failure(&self, source: &Path, error: imgstream_stream::Error) -> Failure {
        stream_failure(source, &self.name, error)
    }

    /// The image is complete: keep the file.
    pub(crate) fn keep(mut self) {
        if let Some(path) = self.created.take() {
            crate::signals::keep(&path);
        }
    }
}

/// A failed stream in one line, naming the side that failed: the source for a read error (the
/// source's own read errors already start with its path), `output` for a write error or an
/// early close.
pub(crate) fn stream_failure(source: &Path, output: &str, error: imgstream_stream::Error) -> Failure {
    match error {
        imgstream_stream::Error::Read(_) => Failure::new(error.to_string()),
        imgstream_stream::Error::BlockSize(_) => Failure::new(format!("{}: {error}", source.display())),
        imgstream_stream::Error::OutputClosed { .. } | imgstream_stream::Error::Write { .. } => {
            Failure::new(format!("{output}: {error}"))
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Some(path) = &self.created {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A block device opened as `restore` opens its target (refused if mounted read-write or in
/// use, then held exclusively), and refused before the first write if `size` bytes do not fit.
fn open_device(path: &Path, size: u64) -> Result<File, Failure> {
    let target = Target::open(path, TargetOptions::default()).map_err(|e| Failure::new(format!("output {e}")))?;
    let capacity = target.capacity().unwrap_or(0);
    if size > capacity {
        return Err(Failure::new(format!(
            "output {}: the image's {size} bytes do not fit in its {capacity} bytes: nothing was written",
            path.display()
        )));
    }
    // The copy shares the exclusive open: the device stays held until the output is closed.
    target.file().try_clone().map_err(|e| Failure::new(format!("output {}: {e}", path.display())))
}

/// Refuses (a usage error) to write `path`, the `what` ("output", "rescue map"), when that
/// could change the source: the same file or device, or one stacked with it.
pub(crate) fn refuse_source(what: &str, path: &Path, source: &Source) -> Result<(), Failure> {
    let shares =
        mounts::shares_bytes(source, path).map_err(|e| Failure::new(format!("{what} {}: {e}", path.display())))?;
    if shares {
        return Err(Failure::usage(format!(
            "{what} {} is the source, or shows its bytes (a link, loop device, partition or holder): the source is never written",
            path.display()
        )));
    }
    Ok(())
}

/// Refuses (a usage error) `path`, the `what`, when it is where the image goes: `output`, or
/// without one the file stdout writes to.
pub(crate) fn refuse_output(what: &str, path: &Path, output: Option<&Path>) -> Result<(), Failure> {
    let is_output = match output {
        Some(output) => same_file(path, output),
        None => std::fs::metadata(path).ok().zip(stdout_metadata()).is_some_and(|(a, b)| same_inode(&a, &b)),
    };
    if is_output {
        let output = output.map_or("stdout".into(), |o| o.display().to_string());
        return Err(Failure::usage(format!(
            "{what} {} is the output ({output}): it would overwrite the image",
            path.display()
        )));
    }
    Ok(())
}

/// True if `a` and `b` name one file: one inode (through any link) if both exist, one place
/// if neither exists yet.
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => same_inode(&a, &b),
        (Err(_), Err(_)) => new_file_place(a).is_some_and(|a| new_file_place(b) == Some(a)),
        _ => false,
    }
}

fn same_inode(a: &Metadata, b: &Metadata) -> bool {
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// Where a file not made yet would be: its directory resolved (links, `..`), then its name.
fn new_file_place(path: &Path) -> Option<PathBuf> {
    Some(std::fs::canonicalize(directory_of(path)).ok()?.join(path.file_name()?))
}

/// The directory a file at `path` is in: "." for a bare name.
pub(crate) fn directory_of(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// What stdout is open on.
fn stdout_metadata() -> Option<Metadata> {
    let stdout = io::stdout().as_fd().try_clone_to_owned().ok()?;
    File::from(stdout).metadata().ok()
}

/// A sink for stdout; a terminal is refused, since an image is binary.
fn stdout_sink() -> Result<Box<dyn Sink>, Failure> {
    let stdout = io::stdout();
    if stdout.is_terminal() {
        return Err(Failure::usage(
            "refusing to write an image to a terminal: redirect stdout, use -o FILE, or pipe it to borg",
        ));
    }
    let stdout = stdout.as_fd().try_clone_to_owned().map_err(|e| Failure::new(format!("stdout: {e}")))?;
    Ok(sink_for(File::from(stdout))?)
}

/// An empty regular file (not in append mode) gets holes for zero runs; a pipe is enlarged and
/// gets its zero runs spliced; anything else (a device, a non-empty file) is written in full.
fn sink_for(mut file: File) -> io::Result<Box<dyn Sink>> {
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
