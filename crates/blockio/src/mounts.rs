//! Which parts of a source are mounted, through any stack of devices? A volume mounted
//! read-write changes while we read it, so the caller refuses that volume (and only that one).
//!
//! Starting from the source (a block device or an image file), we follow every device that
//! shows the same bytes, keeping track of which byte range of the source each one covers:
//! - the partitions of a device (`/sys/dev/block/M:m/<part>/{start,size}`), and the disk a
//!   partition belongs to;
//! - loop devices over a file or device (`/sys/block/loopN/loop/{backing_file,offset}`, with
//!   their size), and the file or device a loop device reads (so `disk /dev/loop0` sees a
//!   mount through `/dev/loop1` over the same file at a partition's offset);
//! - holders (`/sys/dev/block/M:m/holders`: device-mapper, md), whose mapping we do not read:
//!   a holder, and everything above it, covers all of the device it holds.
//!
//! A mount of any of them in `/proc/self/mountinfo` is found by its device number, or, for
//! FUSE filesystems (ntfs-3g, fuse2fs) whose device number is anonymous, by the device or file
//! its source field names.

use crate::{ReadAt, Source, SourceKind};
use std::collections::{HashSet, VecDeque};
use std::fs;
use std::io;
use std::ops::Range;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// A mount of the source or of something stacked on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The mounted device or file, as mountinfo names it (`/dev/loop1`, `/dev/mapper/vg-root`).
    pub device: String,
    /// Where it is mounted.
    pub mount_point: String,
    /// The filesystem type mountinfo gives (`ext4`, `fuseblk`).
    pub filesystem: String,
    /// Mounted read-write (the mount or its superblock).
    pub writable: bool,
    /// The bytes of the source it may cover.
    pub range: Range<u64>,
}

impl Mount {
    /// True if it may cover a byte of `range`.
    pub fn overlaps(&self, range: &Range<u64>) -> bool {
        self.range.start < range.end && range.start < self.range.end
    }

    /// "mounted read-write at /mnt (/dev/loop1, ext4)".
    pub fn describe(&self) -> String {
        let mode = if self.writable { "read-write" } else { "read-only" };
        format!("mounted {mode} at {} ({}, {})", self.mount_point, self.device, self.filesystem)
    }
}

/// Where the kernel lists this process's mounts.
const MOUNTINFO: &str = "/proc/self/mountinfo";

/// `e` prefixed with what failed, keeping its kind.
fn in_context(what: &dyn std::fmt::Display, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Every mount of `source`, of its partitions, and of anything stacked on them.
pub fn mounts_over(source: &Source) -> io::Result<Vec<Mount>> {
    let stacks = Sysfs::new(Path::new("/sys")).stacks(node_of_source(source)?, source.size());
    let mountinfo = fs::read_to_string(MOUNTINFO).map_err(|e| in_context(&MOUNTINFO, e))?;
    Ok(mounts_of(&mountinfo, &stacks))
}

/// True if writing `path` could change bytes of `source`: it is the same file or device
/// (through any link), or they share bytes through a stack: a partition of it or the disk it
/// is in, a loop device over it or the file or device a loop source reads, a holder (dm, md)
/// on it or a device it holds. A path that does not exist shares nothing.
pub fn shares_bytes(source: &Source, path: &Path) -> io::Result<bool> {
    let Some(other) = node_of(path) else { return Ok(false) };
    Ok(Sysfs::new(Path::new("/sys")).share_bytes(&node_of_source(source)?, source.size(), &other, path))
}

/// The node the walk starts from: the source's device number, or its file's inode.
fn node_of_source(source: &Source) -> io::Result<Node> {
    let metadata = source.file().metadata().map_err(|e| in_context(&source.path().display(), e))?;
    Ok(match source.kind() {
        SourceKind::BlockDevice => Node::Block(dev_numbers(metadata.rdev())),
        SourceKind::ImageFile => Node::File(metadata.dev(), metadata.ino()),
    })
}

/// Something that shows bytes of the source.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Node {
    /// A block device, "major:minor".
    Block(String),
    /// A regular file, (device, inode).
    File(u64, u64),
}

/// A node and the bytes of the source it covers.
#[derive(Clone, Debug)]
struct Reach {
    node: Node,
    /// Source byte = node byte + shift (meaningless when `opaque`).
    shift: i128,
    /// The source bytes it covers.
    span: Range<i128>,
    /// A holder (or above one): its mapping is unknown, so it covers all of `span`.
    opaque: bool,
}

/// A loop device: its number, what it reads from which offset, and both sizes.
struct LoopDevice {
    dev: String,
    backing: Node,
    backing_size: u64,
    offset: u64,
    size: u64,
}

/// The sysfs tree, under a root that tests can replace.
struct Sysfs {
    root: PathBuf,
    loops: Vec<LoopDevice>,
}

impl Sysfs {
    fn new(root: &Path) -> Self {
        let mut sysfs = Self { root: root.to_owned(), loops: Vec::new() };
        sysfs.loops = sysfs.read_loops();
        sysfs
    }

    fn read_loops(&self) -> Vec<LoopDevice> {
        let Ok(entries) = fs::read_dir(self.root.join("block")) else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|entry| {
                let path = entry.path();
                let backing_path = fs::read_to_string(path.join("loop/backing_file")).ok()?;
                let backing_path = Path::new(backing_path.trim_end_matches('\n'));
                let backing = node_of(backing_path)?;
                let backing_size = self.node_size(&backing, backing_path)?;
                Some(LoopDevice {
                    dev: read_trimmed(&path.join("dev"))?,
                    backing,
                    backing_size,
                    offset: read_number(&path.join("loop/offset")).unwrap_or(0),
                    size: read_number(&path.join("size"))?.saturating_mul(512),
                })
            })
            .collect()
    }

    /// `/sys/dev/block/M:m`, resolved (partitions are subdirectories of their disk there).
    fn device_dir(&self, dev: &str) -> Option<PathBuf> {
        fs::canonicalize(self.root.join("dev/block").join(dev)).ok()
    }

    /// True if `a`, of `a_size` bytes, and `b`, found at `b_path`, show some of the same bytes.
    /// Walked both ways: the walk follows holders up only, so a device under a holder (a dm
    /// source) is found from that device's side.
    fn share_bytes(&self, a: &Node, a_size: u64, b: &Node, b_path: &Path) -> bool {
        let reaches = |from: &Node, size: u64, to: &Node| self.stacks(from.clone(), size).iter().any(|r| &r.node == to);
        reaches(a, a_size, b) || self.node_size(b, b_path).is_some_and(|size| reaches(b, size, a))
    }

    /// The size in bytes of `node`, found at `path`.
    fn node_size(&self, node: &Node, path: &Path) -> Option<u64> {
        match node {
            Node::Block(dev) => self.device_size(dev),
            Node::File(..) => Some(fs::metadata(path).ok()?.len()),
        }
    }

    /// A block device's size in bytes.
    fn device_size(&self, dev: &str) -> Option<u64> {
        read_number(&self.device_dir(dev)?.join("size"))?.checked_mul(512)
    }

    /// Every node reachable from `start`, with the source bytes it covers. Each node is
    /// visited once, so the walk ends however the devices are stacked.
    fn stacks(&self, start: Node, size: u64) -> Vec<Reach> {
        let whole = 0..i128::from(size);
        let mut seen = HashSet::from([start.clone()]);
        let mut queue = VecDeque::from([Reach { node: start, shift: 0, span: whole.clone(), opaque: false }]);
        let mut reached = Vec::new();
        while let Some(reach) = queue.pop_front() {
            for next in self.neighbours(&reach, &whole) {
                if !next.span.is_empty() && seen.insert(next.node.clone()) {
                    queue.push_back(next);
                }
            }
            reached.push(reach);
        }
        reached
    }

    /// The nodes stacked on `reach` (partitions, loops, holders) and those it stands on (its
    /// disk, a loop device's backing), each with its span.
    fn neighbours(&self, reach: &Reach, whole: &Range<i128>) -> Vec<Reach> {
        // A node at `shift` with `len` bytes, seen from `reach` (`within` clips it).
        let placed = |node: Node, shift: i128, len: u64, within: &Range<i128>| {
            if reach.opaque {
                return Reach { node, shift, span: reach.span.clone(), opaque: true };
            }
            let span = shift.max(within.start)..(shift + i128::from(len)).min(within.end);
            Reach { node, shift, span, opaque: false }
        };
        let mut next = Vec::new();
        for lo in self.loops.iter().filter(|l| l.backing == reach.node) {
            next.push(placed(Node::Block(lo.dev.clone()), reach.shift + i128::from(lo.offset), lo.size, &reach.span));
        }
        let Node::Block(dev) = &reach.node else { return next };
        if let Some(lo) = self.loops.iter().find(|l| &l.dev == dev) {
            next.push(placed(lo.backing.clone(), reach.shift - i128::from(lo.offset), lo.backing_size, whole));
        }
        let Some(dir) = self.device_dir(dev) else { return next };
        let partition = |path: &Path| -> Option<(String, u64, u64)> {
            let start = read_number(&path.join("start"))?;
            Some((
                read_trimmed(&path.join("dev"))?,
                start.checked_mul(512)?,
                read_number(&path.join("size"))?.checked_mul(512)?,
            ))
        };
        if dir.join("partition").exists() {
            if let (Some((_, start, _)), Some(parent)) = (partition(&dir), dir.parent()) {
                if let (Some(parent_dev), Some(len)) =
                    (read_trimmed(&parent.join("dev")), read_number(&parent.join("size")))
                {
                    next.push(placed(
                        Node::Block(parent_dev),
                        reach.shift - i128::from(start),
                        len.saturating_mul(512),
                        whole,
                    ));
                }
            }
        }
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.path().join("partition").exists() {
                if let Some((part_dev, start, len)) = partition(&entry.path()) {
                    next.push(placed(Node::Block(part_dev), reach.shift + i128::from(start), len, &reach.span));
                }
            }
        }
        for entry in fs::read_dir(dir.join("holders")).into_iter().flatten().flatten() {
            if let Some(holder) = read_trimmed(&entry.path().join("dev")) {
                next.push(Reach { node: Node::Block(holder), shift: 0, span: reach.span.clone(), opaque: true });
            }
        }
        next
    }
}

/// What `path` is: a block device by its number, a regular file by (device, inode).
fn node_of(path: &Path) -> Option<Node> {
    let metadata = fs::metadata(path).ok()?;
    if metadata.file_type().is_block_device() {
        Some(Node::Block(dev_numbers(metadata.rdev())))
    } else if metadata.is_file() {
        Some(Node::File(metadata.dev(), metadata.ino()))
    } else {
        None
    }
}

fn dev_numbers(rdev: u64) -> String {
    format!("{}:{}", libc::major(rdev), libc::minor(rdev))
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|text| text.trim().to_owned())
}

fn read_number(path: &Path) -> Option<u64> {
    read_trimmed(path)?.parse().ok()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let mut out = String::new();
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(rest.get(..at).unwrap_or(""));
        let code = rest.get(at + 1..at + 4).and_then(|digits| u8::from_str_radix(digits, 8).ok());
        match code {
            Some(byte) => {
                out.push(char::from(byte));
                rest = rest.get(at + 4..).unwrap_or("");
            }
            None => {
                out.push('\\');
                rest = rest.get(at + 1..).unwrap_or("");
            }
        }
    }
    out + rest
}

/// The mounts in mountinfo text of any node in `stacks`.
fn mounts_of(mountinfo: &str, stacks: &[Reach]) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (mount_fields, fs_fields) = line.split_once(" - ")?;
            let fields: Vec<&str> = mount_fields.split(' ').collect();
            let (dev, mount_point, mount_options) = (fields.get(2)?, fields.get(4)?, fields.get(5)?);
            let mut fs_fields = fs_fields.split(' ');
            let (filesystem, device) = (fs_fields.next()?, unescape(fs_fields.next()?));
            let super_options = fs_fields.next().unwrap_or("");
            // FUSE: an anonymous device number; the source field names the device or file.
            let by_source = device.starts_with('/').then(|| node_of(Path::new(&device))).flatten();
            let reach = stacks
                .iter()
                .find(|r| r.node == Node::Block((*dev).to_owned()) || Some(&r.node) == by_source.as_ref())?;
            let writable = |options: &str| options.split(',').any(|o| o == "rw");
            Some(Mount {
                device,
                mount_point: unescape(mount_point),
                filesystem: filesystem.to_owned(),
                writable: writable(mount_options) || writable(super_options),
                range: u64::try_from(reach.span.start).ok()?..u64::try_from(reach.span.end).ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 7:0 / /mnt/ro ro,relatime shared:1 - ext4 /dev/loop0 ro
23 1 7:1 / /mnt/with\\040space rw,relatime shared:2 - ext4 /dev/loop1 rw
24 1 7:2 / /mnt/bind ro,relatime - ntfs3 /dev/loop2 rw
25 1 253:0 / /home rw - xfs /dev/mapper/vg-home rw
";

    fn reach(dev: &str, span: Range<i128>) -> Reach {
        Reach { node: Node::Block(dev.into()), shift: 0, span, opaque: false }
    }

    #[test]
    fn mounts_are_found_by_device_number_with_their_span_and_mode() {
        let stacks = [reach("7:0", 0..10), reach("7:1", 10..20), reach("7:2", 20..30), reach("8:0", 0..30)];
        let found = mounts_of(MOUNTINFO, &stacks);
        let summary: Vec<_> = found.iter().map(|m| (m.mount_point.as_str(), m.writable, m.range.clone())).collect();
        // A read-only bind of a superblock that is writable elsewhere still changes under us.
        assert_eq!(
            summary,
            [("/mnt/ro", false, 0..10), ("/mnt/with space", true, 10..20), ("/mnt/bind", true, 20..30)]
        );
        assert_eq!(found[1].describe(), "mounted read-write at /mnt/with space (/dev/loop1, ext4)");
        assert!(found[1].overlaps(&(19..25)) && !found[1].overlaps(&(20..25)));
    }

    /// A fake sysfs under `root`: disk 8:0 (8 MiB) with partitions 8:1 at 1 MiB and 8:2 at
    /// 4 MiB (2 MiB each); a device-mapper 253:0 holding 8:2; a loop device 7:0 over the image
    /// file `root/disk.img` (returned) at offset 5 MiB.
    fn fake_sysfs(root: &Path) -> PathBuf {
        let image = root.join("disk.img");
        fs::write(&image, vec![0u8; 8 << 20]).unwrap();
        let write = |path: &str, text: &str| {
            let path = root.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        write("devices/sda/dev", "8:0\n");
        write("devices/sda/size", "16384\n");
        for (name, dev, start) in [("sda1", "8:1", 2048), ("sda2", "8:2", 8192)] {
            write(&format!("devices/sda/{name}/dev"), dev);
            write(&format!("devices/sda/{name}/partition"), "1");
            write(&format!("devices/sda/{name}/start"), &start.to_string());
            write(&format!("devices/sda/{name}/size"), "4096");
        }
        write("devices/dm-0/dev", "253:0\n");
        write("devices/dm-0/size", "4096\n");
        fs::create_dir_all(root.join("devices/sda/sda2/holders")).unwrap();
        std::os::unix::fs::symlink(root.join("devices/dm-0"), root.join("devices/sda/sda2/holders/dm-0")).unwrap();
        write("block/loop0/dev", "7:0\n");
        write("block/loop0/size", "2048\n");
        write("block/loop0/loop/offset", "5242880\n");
        write("block/loop0/loop/backing_file", &format!("{}\n", image.display()));
        fs::create_dir_all(root.join("dev/block")).unwrap();
        for (dev, target) in [("8:0", "sda"), ("8:1", "sda/sda1"), ("8:2", "sda/sda2"), ("253:0", "dm-0")] {
            std::os::unix::fs::symlink(root.join("devices").join(target), root.join("dev/block").join(dev)).unwrap();
        }
        image
    }

    /// Mounts of 253:0 and 7:0 cover partition 2's bytes and nothing else.
    #[test]
    fn partitions_holders_and_loops_over_the_backing_file_are_followed_with_their_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let image = fake_sysfs(dir.path());
        let sysfs = Sysfs::new(dir.path());

        // `part` on partition 2 (as its device): dm-0 covers all of it.
        let stacks = sysfs.stacks(Node::Block("8:2".into()), 2 << 20);
        let spans: Vec<_> = stacks.iter().map(|r| (r.node.clone(), r.span.clone())).collect();
        assert!(spans.contains(&(Node::Block("253:0".into()), 0..2 << 20)), "{spans:?}");
        assert!(spans.contains(&(Node::Block("8:0".into()), 0..2 << 20)), "the disk it is in: {spans:?}");
        assert!(!spans.iter().any(|(node, _)| node == &Node::Block("8:1".into())), "partition 1 is outside: {spans:?}");

        // `disk` on the whole device: each partition at its offset, the holder over partition 2.
        let stacks = sysfs.stacks(Node::Block("8:0".into()), 8 << 20);
        let mountinfo = "30 1 253:0 / /home rw - xfs /dev/mapper/vg-home rw\n31 1 8:1 / /boot ro - ext4 /dev/sda1 ro\n";
        let found = mounts_of(mountinfo, &stacks);
        assert_eq!(
            found.iter().map(|m| (m.range.clone(), m.writable)).collect::<Vec<_>>(),
            [(4 << 20..6 << 20, true), (1 << 20..3 << 20, false)]
        );

        // The image file: the loop device over it at 5 MiB, 1 MiB long.
        let metadata = fs::metadata(&image).unwrap();
        let stacks = sysfs.stacks(Node::File(metadata.dev(), metadata.ino()), 8 << 20);
        let found = mounts_of("40 1 7:0 / /mnt rw - ext4 /dev/loop0 rw\n", &stacks);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].range, 5 << 20..6 << 20);
    }

    /// Writing a device changes the source when they share bytes, whichever is stacked on the
    /// other: a dm source's partition and disk, a holder on a partition source, the loop device
    /// over an image file and that file; never the partition beside them.
    #[test]
    fn devices_sharing_bytes_with_the_source_are_found_whichever_is_stacked_on_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let image = fake_sysfs(dir.path());
        let sysfs = Sysfs::new(dir.path());
        let block = |dev: &str| Node::Block(dev.into());
        // A device's size comes from sysfs, not from its path.
        let shares = |a: &str, b: &str| sysfs.share_bytes(&block(a), 2 << 20, &block(b), Path::new("/nonexistent"));
        assert!(shares("253:0", "8:2") && shares("253:0", "8:0") && shares("8:2", "253:0"));
        assert!(!shares("253:0", "8:1") && !shares("8:1", "253:0") && !shares("8:1", "8:2"));
        let metadata = fs::metadata(&image).unwrap();
        let file = Node::File(metadata.dev(), metadata.ino());
        assert!(sysfs.share_bytes(&file, 8 << 20, &block("7:0"), Path::new("/nonexistent")));
        assert!(sysfs.share_bytes(&block("7:0"), 1 << 20, &file, &image));
    }
}
