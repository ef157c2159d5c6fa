//! Is a source mounted read-write? Then its bitmaps change under us and imaging it is unsafe.
//!
//! A device counts as mounted if it, one of its partitions, or (for an image file) a loop device
//! backed by that file or one of the loop device's partitions appears in
//! `/proc/self/mountinfo`. Device-mapper stacks on top of a device are not followed.

use crate::{Source, SourceKind};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A read-write mount of the source or of something inside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WritableMount {
    /// The mounted device, as mountinfo names it.
    pub device: String,
    /// Where it is mounted.
    pub mount_point: String,
}

/// The first read-write mount of `source`, its partitions, or loop devices over it.
pub fn writable_mount(source: &Source) -> io::Result<Option<WritableMount>> {
    let devices = match source.kind() {
        SourceKind::BlockDevice => device_and_partitions(&dev_numbers(source.file().metadata()?.rdev())),
        SourceKind::ImageFile => {
            loop_devices_backed_by(source.path())?.iter().flat_map(|dev| device_and_partitions(dev)).collect()
        }
    };
    if devices.is_empty() {
        return Ok(None);
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    Ok(writable_mount_of(&mountinfo, &devices))
}

/// Finds a read-write mount of any of `devices` ("major:minor") in mountinfo text.
pub fn writable_mount_of(mountinfo: &str, devices: &[String]) -> Option<WritableMount> {
    mountinfo.lines().find_map(|line| {
        let (mount_fields, fs_fields) = line.split_once(" - ")?;
        let fields: Vec<&str> = mount_fields.split(' ').collect();
        let (device, mount_point, mount_options) = (fields.get(2)?, fields.get(4)?, fields.get(5)?);
        let super_options = fs_fields.split(' ').nth(2).unwrap_or("");
        let writable = |options: &str| options.split(',').any(|o| o == "rw");
        (devices.iter().any(|d| d == device) && (writable(mount_options) || writable(super_options))).then(|| {
            WritableMount {
                device: fs_fields.split(' ').nth(1).unwrap_or(device).to_owned(),
                mount_point: (*mount_point).to_owned(),
            }
        })
    })
}

fn dev_numbers(rdev: u64) -> String {
    format!("{}:{}", libc::major(rdev), libc::minor(rdev))
}

/// `dev` plus every partition of it that sysfs lists.
fn device_and_partitions(dev: &str) -> Vec<String> {
    let mut devices = vec![dev.to_owned()];
    if let Ok(entries) = fs::read_dir(format!("/sys/dev/block/{dev}")) {
        for entry in entries.flatten() {
            if entry.path().join("partition").exists() {
                if let Ok(numbers) = fs::read_to_string(entry.path().join("dev")) {
                    devices.push(numbers.trim().to_owned());
                }
            }
        }
    }
    devices
}

/// The "major:minor" of every loop device whose backing file is `image`.
fn loop_devices_backed_by(image: &Path) -> io::Result<Vec<String>> {
    let image = fs::canonicalize(image)?;
    let mut devices = Vec::new();
    let Ok(entries) = fs::read_dir("/sys/block") else { return Ok(devices) };
    for entry in entries.flatten() {
        let backing = entry.path().join("loop/backing_file");
        let Ok(backing_path) = fs::read_to_string(&backing) else { continue };
        if Path::new(backing_path.trim()) == image {
            if let Ok(numbers) = fs::read_to_string(entry.path().join("dev")) {
                devices.push(numbers.trim().to_owned());
            }
        }
    }
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 7:0 / /mnt/ro ro,relatime shared:1 - ext4 /dev/loop0 ro
23 1 7:1 / /mnt/rw rw,relatime shared:2 - ext4 /dev/loop1 rw
24 1 7:2 / /mnt/bind ro,relatime - ntfs3 /dev/loop2 rw
";

    #[test]
    fn read_only_mounts_pass_and_read_write_ones_are_found() {
        assert_eq!(writable_mount_of(MOUNTINFO, &["7:0".into()]), None);
        let found = writable_mount_of(MOUNTINFO, &["7:1".into()]).unwrap();
        assert_eq!(found, WritableMount { device: "/dev/loop1".into(), mount_point: "/mnt/rw".into() });
        // A read-only bind of a superblock that is writable elsewhere still changes under us.
        assert!(writable_mount_of(MOUNTINFO, &["7:2".into()]).is_some());
        assert_eq!(writable_mount_of(MOUNTINFO, &["8:0".into()]), None);
    }
}
