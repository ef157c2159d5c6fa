//! The view as a tar stream, for `borg import-tar` where FUSE is missing: one regular file per
//! view file, in view order, contents with their zeros (a pipe cannot carry holes).
//!
//! Headers are GNU tar's: sizes of 8 GiB and more, which the 11 octal digits of ustar cannot
//! hold, use GNU's base-256 form (Python's tarfile, which borg uses, reads it). [`View::write_tar`]
//! never writes the end-of-archive blocks; [`finish`] does, once the caller knows everything
//! went well. Beware: a tar stream cut at a member boundary, even without its end blocks, is
//! accepted by Python's tarfile (checked with borg 1.2.4 import-tar: it commits such an
//! archive), so on failure the caller must stop borg before closing its input.

use crate::{Content, View};
use imgstream_blockio::Window;
use imgstream_stream::{NoProgress, Options, Sink};
use std::io;

/// Tar's block size: headers and each member's padded data.
pub const BLOCK: u64 = 512;
/// Largest size the 11 octal digits of a ustar header hold.
const OCTAL_SIZE_MAX: u64 = (1 << 33) - 1;

/// Two zero blocks: the end of a tar archive.
pub fn finish(sink: &mut dyn Sink) -> io::Result<()> {
    sink.write_zeros(2 * BLOCK)?;
    sink.finish()
}

/// The 512-byte header of a read-only regular file `name` of `size` bytes, modified at `mtime`
/// (seconds since the epoch).
pub fn header(name: &str, size: u64, mtime: u64) -> io::Result<[u8; BLOCK as usize]> {
    let mut block = [0u8; BLOCK as usize];
    if name.len() >= 100 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("tar member name {name} is too long")));
    }
    put(&mut block, 0, name.as_bytes());
    put(&mut block, 100, b"0000444\0");
    put(&mut block, 108, b"0000000\0");
    put(&mut block, 116, b"0000000\0");
    if size <= OCTAL_SIZE_MAX {
        put(&mut block, 124, format!("{size:011o}\0").as_bytes());
    } else {
        // Base-256: a set top bit, then the number big-endian in the field's 12 bytes.
        let mut field = [0u8; 12];
        put(&mut field, 4, &size.to_be_bytes());
        if let Some(first) = field.first_mut() {
            *first |= 0x80;
        }
        put(&mut block, 124, &field);
    }
    put(&mut block, 136, format!("{:011o}\0", mtime.min(OCTAL_SIZE_MAX)).as_bytes());
    put(&mut block, 156, b"0");
    put(&mut block, 257, b"ustar  \0");
    put(&mut block, 265, b"root");
    put(&mut block, 297, b"root");
    // The checksum counts its own field as eight spaces.
    put(&mut block, 148, b"        ");
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    put(&mut block, 148, format!("{sum:06o}\0 ").as_bytes());
    Ok(block)
}

fn put(block: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(field) = block.get_mut(at..at + bytes.len()) {
        field.copy_from_slice(bytes);
    }
}

impl View {
    /// Writes every file as a tar member (header, contents, padding) to `sink`, reading the
    /// used ranges with the streaming engine; `between` runs before each member and may stop
    /// the stream with an error (an interruption). No end blocks: see [`finish`].
    pub fn write_tar(
        &self,
        sink: &mut dyn Sink,
        options: Options,
        between: &dyn Fn() -> io::Result<()>,
    ) -> io::Result<()> {
        let mtime = self.created().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        for (file, used) in self.files().iter().zip(&self.used) {
            between()?;
            let size = file.size();
            sink.write_data(&header(&file.name, size, mtime)?)?;
            match &file.content {
                Content::Bytes(bytes) => sink.write_data(bytes)?,
                Content::Source { start, len, .. } => {
                    let window = Window::new(&*self.source, *start, *len)?;
                    imgstream_stream::stream(&window, used, sink, options, &NoProgress).map_err(|e| {
                        // A closed pipe stays one: the caller then asks the consumer why.
                        let kind = match &e {
                            imgstream_stream::Error::OutputClosed { .. } => io::ErrorKind::BrokenPipe,
                            imgstream_stream::Error::Write { source, .. } => source.kind(),
                            _ => io::ErrorKind::Other,
                        };
                        io::Error::new(kind, format!("{}: {e}", file.name))
                    })?;
                }
            }
            sink.write_zeros(size.next_multiple_of(BLOCK) - size)?;
        }
        Ok(())
    }
}
