//! Where the image goes: a stream (socket, device), a pipe (zero runs spliced, not copied), or
//! an empty regular file that gets holes where the image has zero runs.

use nix::errno::Errno;
use nix::fcntl::{SpliceFFlags, vmsplice};
use std::fs::File;
use std::io::{self, IoSlice, Seek, SeekFrom, Write};

/// Zero runs are written from this one shared buffer.
static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

/// Granularity of holes inside data blocks: the page size and the block size of most
/// filesystems, below which a hole saves nothing.
const HOLE_PAGE: usize = 4096;

/// Whether the first page of `data` (or all of it, if shorter) is all zeros.
fn is_zero_page(data: &[u8]) -> bool {
    data.iter().take(HOLE_PAGE).all(|&b| b == 0)
}

/// The writer's view of the output.
pub trait Sink {
    /// Appends `data`.
    fn write_data(&mut self, data: &[u8]) -> io::Result<()>;
    /// Appends `len` zero bytes.
    fn write_zeros(&mut self, len: u64) -> io::Result<()>;
    /// Completes the output (sets a sparse file's final length).
    fn finish(&mut self) -> io::Result<()>;
}

/// Any `Write`: zeros are written as bytes. Give it an unbuffered writer (a `File`): blocks
/// are already large.
pub struct StreamSink<W> {
    out: W,
}

impl<W: Write> StreamSink<W> {
    /// Wraps a writer.
    pub fn new(out: W) -> Self {
        Self { out }
    }

    /// The wrapped writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write> Sink for StreamSink<W> {
    fn write_data(&mut self, data: &[u8]) -> io::Result<()> {
        self.out.write_all(data)
    }

    fn write_zeros(&mut self, len: u64) -> io::Result<()> {
        write_zeros_to(&mut self.out, len)
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The first `len` bytes (at most one buffer) of the shared zeros.
fn zeros_up_to(len: u64) -> &'static [u8] {
    let len = ZEROS.len().min(usize::try_from(len).unwrap_or(usize::MAX));
    ZEROS.get(..len).unwrap_or_default()
}

/// Writes `len` zero bytes from the shared buffer.
fn write_zeros_to(out: &mut impl Write, mut len: u64) -> io::Result<()> {
    while len > 0 {
        let chunk = zeros_up_to(len);
        out.write_all(chunk)?;
        len -= chunk.len() as u64;
    }
    Ok(())
}

/// A pipe (to borg, dd, ...). Data is written; zero runs are handed to the pipe with
/// `vmsplice(2)`, which makes the pipe reference the pages of the shared zero buffer instead
/// of copying them, so the consumer's read is the only copy. That is safe because the buffer
/// is immutable: whenever the consumer reads those pages, they hold zeros.
pub struct PipeSink {
    pipe: File,
    /// False once the kernel refused `vmsplice`: plain writes from then on.
    splice: bool,
}

impl PipeSink {
    /// Wraps the write end of a pipe.
    pub fn new(pipe: File) -> Self {
        Self { pipe, splice: true }
    }
}

impl Sink for PipeSink {
    fn write_data(&mut self, data: &[u8]) -> io::Result<()> {
        self.pipe.write_all(data)
    }

    fn write_zeros(&mut self, mut len: u64) -> io::Result<()> {
        while len > 0 && self.splice {
            match vmsplice(&self.pipe, &[IoSlice::new(zeros_up_to(len))], SpliceFFlags::empty()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(spliced) => len -= spliced as u64,
                Err(Errno::EINTR) => {}
                Err(Errno::EPIPE) => return Err(Errno::EPIPE.into()),
                // Refused (not a pipe after all, a seccomp filter, ...): writes then tell what is
                // wrong, if anything is.
                Err(_) => self.splice = false,
            }
        }
        write_zeros_to(&mut self.pipe, len)
    }

    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An empty regular file opened for writing (not in append mode): zero runs, and all-zero
/// pages inside data blocks (free blocks smaller than a stream block), become holes; `finish`
/// sets the exact final length, so a trailing zero run also reads back as zeros.
pub struct SparseFileSink {
    file: File,
    position: u64,
}

impl SparseFileSink {
    /// Wraps an empty file positioned at byte 0.
    pub fn new(file: File) -> Self {
        Self { file, position: 0 }
    }
}

impl Sink for SparseFileSink {
    fn write_data(&mut self, data: &[u8]) -> io::Result<()> {
        // Consecutive pages of one kind (zero or not) are handled with one seek or one write.
        let mut rest = data;
        while !rest.is_empty() {
            let zero = is_zero_page(rest);
            let run = rest.chunks(HOLE_PAGE).take_while(|page| is_zero_page(page) == zero).map(<[u8]>::len).sum();
            let (run_bytes, tail) = rest.split_at(run);
            if zero {
                self.write_zeros(run as u64)?;
            } else {
                self.file.write_all(run_bytes)?;
                self.position += run as u64;
            }
            rest = tail;
        }
        Ok(())
    }

    fn write_zeros(&mut self, len: u64) -> io::Result<()> {
        let delta = i64::try_from(len).map_err(|_| io::Error::other("zero run too long to seek over"))?;
        self.file.seek(SeekFrom::Current(delta))?;
        self.position += len;
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.file.set_len(self.position)?;
        self.file.flush()
    }
}
