//! A fuzz volume: the input's bytes, then zeros up to a size the input's last two bytes choose
//! (in 4 KiB units, so up to 256 MiB). Small inputs can thus describe a large volume whose
//! metadata lies at its start, without allocating it. Shared by the fat, exfat, swap and xfs targets.

use imgstream_blockio::ReadAt;
use std::io;

pub struct ZeroTail<'a> {
    data: &'a [u8],
    size: u64,
}

impl<'a> ZeroTail<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        let (data, extra) = match input {
            [data @ .., hi, lo] => (data, u64::from(u16::from_be_bytes([*hi, *lo])) * 4096),
            _ => (input, 0),
        };
        Self { data, size: data.len() as u64 + extra }
    }
}

impl ReadAt for ZeroTail<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).filter(|&end| end <= self.size);
        if end.is_none() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "past the end"));
        }
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(self.data.len());
        let present = self.data.get(start..).unwrap_or_default();
        let n = present.len().min(buf.len());
        let (head, tail) = buf.split_at_mut(n);
        head.copy_from_slice(&present[..n]);
        tail.fill(0);
        Ok(())
    }
    fn size(&self) -> u64 {
        self.size
    }
}

/// The properties every parser answer must have: used ranges inside the volume, and the same
/// answer twice.
pub fn check(
    volume: &ZeroTail<'_>,
    first: &imgstream_volume::Allocation,
    again: &imgstream_volume::Allocation,
    kept: u64,
) {
    assert!(first.used.end() <= volume.size(), "used range past the end of the volume");
    assert_eq!(first, again, "two analyses of the same volume differ");
    assert!(first.unit > 0);
    assert!(first.used.contains_range(0..kept.min(volume.size())), "the first {kept} bytes must always be kept");
}
