//! imgstream's integration tests: the real binary against images made by the real mkfs tools,
//! judged by oracles we did not write (dumpe2fs, zerofree, e2fsck, ntfsclone, fsck.fat, borg).
//!
//! Tests that need an external tool skip with a visible message when it is missing, and fail
//! when `CI=true`. Tests that need root (loop devices, mounts) say so in their name (`root_`).

#![allow(unreachable_pub, missing_docs)]

mod util;

mod backup;
mod btrfs;
mod cli;
mod disk;
mod exfat;
mod ext;
mod fat;
mod faults;
mod journal;
mod lvm;
mod md;
mod mutation;
mod ntfs;
mod package;
mod policy;
mod restore;
mod swap;
mod verify;
mod xfs;
