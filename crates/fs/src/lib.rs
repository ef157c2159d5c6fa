//! Which bytes of a volume must be copied, and may we zero the rest?
//!
//! [`examine`] recognises the filesystem of a volume, asks its crate for an [`Allocation`], and
//! applies one policy to every filesystem:
//! - unrecognised, or a variant its crate does not support: copy the volume raw, with a warning;
//!   what [`signatures`] recognises (LUKS, F2FS, qcow2, ...) is named in that warning;
//! - corrupt metadata: fail, unless the user asked for a raw copy (`--raw`);
//! - unsafe to zero (journal needs recovery, dirty, hibernated): as [`OnUnsafe`] says: copy
//!   the volume raw with a warning (the default), fail, or elide anyway with a warning;
//! - metadata that cannot be read: fail, or in rescue mode copy the volume raw, with a warning.
//!
//! Volume managers come first: an LVM2 PV or md RAID member is examined through the volumes it
//! holds ([`container`]), each of them with this same policy. [`examine_parts`] examines the
//! partitions of one disk together, so that a VG spread over several of them is mapped as one.

#![forbid(unsafe_code)]

mod container;
pub mod signatures;

pub use container::{Container, Inner};

use imgstream_blockio::ReadAt;
use imgstream_volume::{Allocation, Classify, ErrorClass, RangeSet};
use std::fmt;
use std::hash::{DefaultHasher, Hasher};
use std::io;
use std::str::FromStr;

/// What the user allows.
#[derive(Clone, Copy, Debug, Default)]
pub struct Policy {
    /// Copy everything, do not even parse the filesystem (`--raw`).
    pub raw: bool,
    /// What to do with a volume that is unsafe to elide (`--on-unsafe`, `--force`).
    pub on_unsafe: OnUnsafe,
    /// NTFS: also zero pagefile.sys, swapfile.sys and a non-hibernated hiberfil.sys.
    pub drop_pagefile: bool,
    /// ext with metadata_csum: cross-check the bitmaps with an inode scan too (`--deep-check`).
    pub deep_check: bool,
    /// Metadata that cannot be read does not fail the run: the volume is copied raw (`--rescue`).
    pub rescue: bool,
}

/// What to do with a volume whose filesystem says zeroing its free space could lose data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnUnsafe {
    /// Copy it unelided, with a warning: the image is complete, only larger.
    #[default]
    Raw,
    /// Fail the run.
    Refuse,
    /// Elide it anyway, with a warning: the image can lose data.
    Force,
}

impl OnUnsafe {
    /// Every value, as the command line spells it.
    pub const NAMES: [&'static str; 3] = ["raw", "refuse", "force"];
}

impl FromStr for OnUnsafe {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "raw" => Ok(Self::Raw),
            "refuse" => Ok(Self::Refuse),
            "force" => Ok(Self::Force),
            _ => Err(format!("{text:?} is not one of {}", Self::NAMES.join(", "))),
        }
    }
}

impl fmt::Display for OnUnsafe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Raw => "raw",
            Self::Refuse => "refuse",
            Self::Force => "force",
        };
        f.write_str(name)
    }
}

/// How a volume's free space is treated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Elision {
    /// Free space per the filesystem's allocation map is emitted as zeros.
    Elided,
    /// Elided although the filesystem reported hazards (`--force`).
    Forced,
    /// Everything is copied; the reason says why.
    Raw(String),
}

/// The verdict on one volume.
#[derive(Clone, Debug)]
pub struct Volume {
    /// Volume size in bytes.
    pub size: u64,
    /// What the parser found, if a filesystem was recognised and parsed.
    pub allocation: Option<Allocation>,
    /// The bytes to copy; everything else is emitted as zeros.
    pub used: RangeSet,
    /// Elided, forced or raw.
    pub elision: Elision,
    /// Messages for stderr.
    pub warnings: Vec<String>,
    /// What the volume is when no parser handles it (a signature, or a partition's purpose).
    pub recognised_as: Option<&'static str>,
    /// A volume manager's view (LVM2 PV, md member): the volumes inside, for `info`.
    pub inner: Option<Container>,
}

impl Volume {
    /// Where its allocation map lives (empty when nothing was parsed).
    pub fn map_ranges(&self) -> RangeSet {
        self.allocation.as_ref().map(|a| a.map_ranges.clone()).unwrap_or_default()
    }

    /// Name of the recognised filesystem or container, or "unknown".
    pub fn filesystem(&self) -> &str {
        self.allocation.as_ref().map(|a| a.filesystem.as_str()).or(self.recognised_as).unwrap_or("unknown")
    }

    /// The whole volume copied, for `reason`; with a warning if `warn`.
    pub fn raw(size: u64, allocation: Option<Allocation>, reason: String, warn: bool) -> Self {
        let warnings = if warn { vec![format!("{reason}; copying it raw")] } else { Vec::new() };
        Self {
            size,
            allocation,
            used: RangeSet::from_range(0..size),
            elision: Elision::Raw(reason),
            warnings,
            recognised_as: None,
            inner: None,
        }
    }
}

/// Why a volume cannot be streamed as asked. Each message is one line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the volume failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The filesystem's metadata is inconsistent.
    #[error("corrupt {filesystem}: {message} (use --raw to copy it unelided)")]
    Corrupt {
        /// Which filesystem was recognised.
        filesystem: &'static str,
        /// The parser's description, with the byte offset.
        message: String,
    },
    /// Zeroing free space could lose data.
    #[error("unsafe to elide {filesystem}: {} (--on-unsafe raw copies it unelided, --on-unsafe force elides anyway)", reasons.join("; "))]
    Unsafe {
        /// Which filesystem.
        filesystem: String,
        /// What the parser found.
        reasons: Vec<String>,
    },
    /// A volume inside a container (an LV, an md array's data) failed.
    #[error("{volume}: {message}")]
    Inside {
        /// Which inner volume, e.g. "LV vg0/root".
        volume: String,
        /// Its error.
        message: String,
    },
}

/// How deep volume managers may nest (a PV on an md member holding an LV holding a PV...).
const MAX_DEPTH: usize = 4;

/// A recognised filesystem's parse result, before the policy.
type Parsed = Result<Allocation, Box<dyn Classify>>;

fn boxed<E: Classify>(error: E) -> Box<dyn Classify> {
    Box::new(error)
}

/// Tries each known filesystem's signature in turn; the first that matches parses the volume.
/// Returns the filesystem's name with its parse result, or `None` if nothing matched.
fn recognise(volume: &dyn ReadAt, policy: &Policy) -> io::Result<Option<(&'static str, Parsed)>> {
    // One entry per filesystem crate, most specific signature first.
    // NTFS: "NTFS    " at byte 3 of the boot sector.
    if imgstream_ntfs::detect(volume)? {
        let options = imgstream_ntfs::Options { drop_pagefile: policy.drop_pagefile };
        return Ok(Some(("ntfs", imgstream_ntfs::analyze(volume, &options).map_err(boxed))));
    }
    // exFAT ("EXFAT   " at byte 3) before FAT; FAT's detect also rejects NTFS and exFAT boot sectors.
    if imgstream_exfat::detect(volume)? {
        return Ok(Some(("exfat", imgstream_exfat::analyze(volume).map_err(boxed))));
    }
    if imgstream_fat::detect(volume)? {
        return Ok(Some(("fat", imgstream_fat::analyze(volume).map_err(boxed))));
    }
    // XFS: "XFSB" at byte 0.
    if imgstream_xfs::detect(volume)? {
        return Ok(Some(("xfs", imgstream_xfs::analyze(volume).map_err(boxed))));
    }
    // btrfs: "_BHRfS_M" in the superblock at 64 KiB.
    if imgstream_btrfs::detect(volume)? {
        return Ok(Some(("btrfs", imgstream_btrfs::analyze(volume).map_err(boxed))));
    }
    // ext2/3/4: magic 0xEF53 at byte 1080, in the superblock.
    if imgstream_ext::detect(volume)? {
        let options = imgstream_ext::Options { deep_check: policy.deep_check };
        return Ok(Some(("ext", imgstream_ext::analyze_with(volume, &options).map_err(boxed))));
    }
    // Swap last: its magic ends a page (4-64 KiB), where other filesystems hold data.
    if imgstream_swap::detect(volume)? {
        return Ok(Some(("swap", imgstream_swap::analyze(volume).map_err(boxed))));
    }
    Ok(None)
}

/// A digest of the bytes of `volume` in `ranges` (an allocation's `map_ranges`): reading it
/// before and after streaming tells whether the allocation map changed meanwhile.
pub fn digest(volume: &dyn ReadAt, ranges: &RangeSet) -> io::Result<u64> {
    const CHUNK: u64 = 1 << 20;
    let mut hasher = DefaultHasher::new();
    let mut buffer = Vec::new();
    for range in ranges.clipped(volume.size()).iter() {
        let mut at = range.start;
        while at < range.end {
            let len = (range.end - at).min(CHUNK);
            buffer.resize(usize::try_from(len).unwrap_or(0), 0);
            volume.read_exact_at(&mut buffer, at)?;
            hasher.write(&buffer);
            at += len;
        }
        volume.drop_cache(range);
    }
    Ok(hasher.finish())
}

/// Decides which bytes of `volume` to copy.
pub fn examine(volume: &dyn ReadAt, policy: &Policy) -> Result<Volume, Error> {
    examine_at(volume, policy, 0)
}

/// Decides which bytes of each volume of `source` to copy, given as (byte range, its policy):
/// the partitions of a disk. LVM2 PVs among them are mapped together: an LV striped over two
/// partitions is read whole.
pub fn examine_parts(source: &dyn ReadAt, parts: &[(std::ops::Range<u64>, Policy)]) -> Vec<Result<Volume, Error>> {
    container::examine_parts(source, parts, 0)
}

/// Whether `volume` is an md member, and whether it is an LVM2 PV (md first: a 1.0 member
/// holding a PV shows the PV's label at its start too); a read error names what was read.
fn volume_manager(volume: &dyn ReadAt) -> io::Result<(bool, bool)> {
    imgstream_md::detect(volume)
        .and_then(|md| Ok((md, !md && imgstream_lvm::detect(volume)?)))
        .map_err(|e| io::Error::new(e.kind(), format!("looking for an md superblock or an LVM2 label: {e}")))
}

/// A volume of `size` bytes copied raw under `--rescue` because reading its metadata failed
/// with `error`.
fn unreadable(size: u64, error: &dyn fmt::Display) -> Volume {
    Volume::raw(size, None, format!("its metadata cannot be read ({error}), so nothing is known free"), true)
}

/// [`examine`] of a volume found `depth` volume managers deep.
fn examine_at(volume: &dyn ReadAt, policy: &Policy, depth: usize) -> Result<Volume, Error> {
    let size = volume.size();
    if policy.raw {
        return Ok(Volume::raw(size, None, "--raw was given".into(), false));
    }
    if depth < MAX_DEPTH {
        match volume_manager(volume) {
            Err(error) if policy.rescue => return Ok(unreadable(size, &error)),
            Err(error) => return Err(error.into()),
            Ok((true, _)) => return container::md_member(volume, policy, depth),
            Ok((_, true)) => {
                let mut results = container::examine_parts(volume, &[(0..size, *policy)], depth);
                return results
                    .pop()
                    .unwrap_or_else(|| Ok(Volume::raw(size, None, "LVM2 PV not examined".into(), true)));
            }
            Ok(_) => {}
        }
    }
    let recognised = match recognise(volume, policy) {
        Err(error) if policy.rescue => return Ok(unreadable(size, &error)),
        recognised => recognised?,
    };
    let Some((filesystem, parsed)) = recognised else {
        // Only what no parser claimed is looked up, so a crate that learns a format wins.
        return Ok(match signatures::identify(volume)? {
            Some(signature) => {
                Volume { recognised_as: Some(signature.name), ..Volume::raw(size, None, signature.describe(), true) }
            }
            None => Volume::raw(size, None, "no known filesystem".into(), true),
        });
    };
    let allocation = match parsed {
        Ok(allocation) => allocation,
        Err(error) => {
            return match error.class() {
                ErrorClass::Io if policy.rescue => {
                    Ok(Volume { recognised_as: Some(filesystem), ..unreadable(size, &error) })
                }
                ErrorClass::Io => Err(Error::Io(io::Error::other(error.to_string()))),
                ErrorClass::Corrupt => Err(Error::Corrupt { filesystem, message: error.to_string() }),
                ErrorClass::Unsupported => {
                    let reason = format!("{filesystem}: {error}");
                    Ok(Volume { recognised_as: Some(filesystem), ..Volume::raw(size, None, reason, true) })
                }
            };
        }
    };
    let mut warnings = allocation.warnings.clone();
    let elision = if allocation.unsafe_reasons.is_empty() {
        Elision::Elided
    } else {
        let reasons = allocation.unsafe_reasons.join("; ");
        match policy.on_unsafe {
            OnUnsafe::Force => {
                warnings.push(format!(
                    "eliding {} despite: {reasons} (--force / --on-unsafe force)",
                    allocation.filesystem
                ));
                Elision::Forced
            }
            OnUnsafe::Refuse => {
                return Err(Error::Unsafe { filesystem: allocation.filesystem, reasons: allocation.unsafe_reasons });
            }
            OnUnsafe::Raw => {
                let reason = format!("{}: unsafe to elide: {reasons}", allocation.filesystem);
                return Ok(Volume::raw(size, Some(allocation), reason, true));
            }
        }
    };
    // The parser promises volume-relative ranges; clipping keeps a bug there from reading past the end.
    let used = allocation.used.clipped(size);
    Ok(Volume { size, used, allocation: Some(allocation), elision, warnings, recognised_as: None, inner: None })
}
