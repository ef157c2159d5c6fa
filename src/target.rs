//! The target of `restore` and `restore-disk`: what is there before the run (refusing what
//! can never be a target), and removing the file a failed run created.

use crate::{Failure, signals};
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// `path` before the run: `None` if it does not exist yet. Refused with one line: a directory,
/// anything but a regular file or block device, and a missing node under /dev.
pub(crate) fn existing(path: &Path) -> Result<Option<Metadata>, Failure> {
    let refuse = |what: &str| Failure::new(format!("{}: {what}; nothing was written", path.display()));
    match fs::metadata(path) {
        Ok(metadata) if metadata.is_dir() => Err(refuse("is a directory, not a file or block device")),
        Ok(metadata)
            if metadata.is_file() || std::os::unix::fs::FileTypeExt::is_block_device(&metadata.file_type()) =>
        {
            Ok(Some(metadata))
        }
        Ok(_) => Err(refuse("not a regular file or block device")),
        Err(e) if e.kind() == io::ErrorKind::NotFound && in_dev(path) => Err(refuse("the device does not exist")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Failure::new(format!("{}: {e}", path.display()))),
    }
}

/// Whether a new file at `path` would land in /dev's own filesystem (devtmpfs): a device node
/// that has not appeared (yet), or a typo, where a file would only fill memory and hide the
/// mistake. Another filesystem mounted below /dev (/dev/shm) is a place for files.
fn in_dev(path: &Path) -> bool {
    let parent = crate::output::directory_of(path).canonicalize();
    let (Ok(parent), Ok(dev)) = (parent, fs::metadata("/dev")) else { return false };
    parent.starts_with("/dev") && fs::metadata(&parent).is_ok_and(|m| m.dev() == dev.dev())
}

/// Runs `write` into `path`; when the run creates the file (`existed` false), a failure or a
/// signal removes it again, so that no half-written file looks like a restored one.
pub(crate) fn removed_unless_complete<T>(
    path: &Path,
    existed: bool,
    write: impl FnOnce() -> Result<T, Failure>,
) -> Result<T, Failure> {
    if existed {
        return write();
    }
    signals::remove_on_signal(path);
    let result = write();
    match &result {
        Ok(_) => signals::keep(path),
        Err(_) => {
            let _ = fs::remove_file(path);
        }
    }
    result
}
