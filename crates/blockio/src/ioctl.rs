//! The block-device ioctls imgstream needs, declared from `<linux/fs.h>` (nix has none).
//!
//! This module holds the workspace's only `unsafe`: each call passes a valid fd (borrowed from
//! a live `File`) and a pointer to a properly sized local, which is all these ioctls require.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

mod raw {
    // BLKGETSIZE64 is _IOR(0x12, 114, size_t) but writes a u64; the request encodes sizeof(size_t).
    nix::ioctl_read_bad!(blkgetsize64, nix::request_code_read!(0x12, 114, size_of::<usize>()), u64);
    // BLKSSZGET is declared _IO but writes an int.
    nix::ioctl_read_bad!(blksszget, nix::request_code_none!(0x12, 104), libc::c_int);
    // BLKZEROOUT takes [start, len] in bytes.
    nix::ioctl_write_ptr_bad!(blkzeroout, nix::request_code_none!(0x12, 127), [u64; 2]);
    nix::ioctl_none!(blkrrpart, 0x12, 95);
}

/// Size in bytes of a block device (`metadata().len()` is 0 for devices).
pub fn device_size(device: &File) -> io::Result<u64> {
    let mut size = 0u64;
    // SAFETY: valid fd, `size` is a u64 as the kernel writes.
    unsafe { raw::blkgetsize64(device.as_raw_fd(), &mut size) }?;
    Ok(size)
}

/// Logical sector size of a block device.
pub fn logical_sector_size(device: &File) -> io::Result<u32> {
    let mut size: libc::c_int = 0;
    // SAFETY: valid fd, `size` is a c_int as the kernel writes.
    unsafe { raw::blksszget(device.as_raw_fd(), &mut size) }?;
    u32::try_from(size).map_err(|_| io::Error::other(format!("invalid sector size {size}")))
}

/// Makes `[start, start + len)` of a block device read as zeros (cheap on thin or SSD targets).
pub fn zero_out(device: &File, start: u64, len: u64) -> io::Result<()> {
    let range = [start, len];
    // SAFETY: valid fd, the kernel reads two u64 from `range`.
    unsafe { raw::blkzeroout(device.as_raw_fd(), &range) }?;
    Ok(())
}

/// Asks the kernel to re-read a disk's partition table after it was written.
pub fn reread_partition_table(device: &File) -> io::Result<()> {
    // SAFETY: valid fd, no argument.
    unsafe { raw::blkrrpart(device.as_raw_fd()) }?;
    Ok(())
}
