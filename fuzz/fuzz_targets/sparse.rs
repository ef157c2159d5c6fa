//! A sparse fuzz volume, for formats whose metadata is spread over the volume (NTFS, btrfs):
//! the input is not a prefix of the volume but a description of the bytes that matter, so small
//! seeds describe whole volumes that analyse successfully.

use imgstream_blockio::ReadAt;
use std::io;
use std::ops::Range;

/// A volume described by the input: a u16 (big-endian) size in 4 KiB units (up to 256 MiB),
/// then chunks of (byte offset u32 LE, length u16 LE, bytes); every other byte reads as zero,
/// later chunks override earlier ones, and a short last chunk keeps the bytes present.
pub struct Sparse<'a> {
    size: u64,
    chunks: Vec<(u64, &'a [u8])>,
}

/// Where the input puts each chunk: (volume byte offset, the chunk's bytes within the input).
pub fn layout(input: &[u8]) -> Vec<(u64, Range<usize>)> {
    let mut chunks = Vec::new();
    let mut pos = 2;
    while let Some(&[a, b, c, d, e, f]) = input.get(pos..pos + 6) {
        let offset = u64::from(u32::from_le_bytes([a, b, c, d]));
        let start = pos + 6;
        let end = (start + usize::from(u16::from_le_bytes([e, f]))).min(input.len());
        chunks.push((offset, start..end));
        pos = end;
    }
    chunks
}

impl<'a> Sparse<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        let size = match input {
            [hi, lo, ..] => u64::from(u16::from_be_bytes([*hi, *lo])) * 4096,
            _ => 0,
        };
        let chunks = layout(input).into_iter().map(|(offset, range)| (offset, &input[range])).collect();
        Self { size, chunks }
    }
}

impl ReadAt for Sparse<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).filter(|&end| end <= self.size);
        let Some(end) = end else {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "past the end"));
        };
        buf.fill(0);
        for &(start, bytes) in &self.chunks {
            let from = start.max(offset);
            let to = (start + bytes.len() as u64).min(end);
            if from < to {
                let (src, dst) = ((from - start) as usize, (from - offset) as usize);
                let n = (to - from) as usize;
                buf[dst..dst + n].copy_from_slice(&bytes[src..src + n]);
            }
        }
        Ok(())
    }
    fn size(&self) -> u64 {
        self.size
    }
}
