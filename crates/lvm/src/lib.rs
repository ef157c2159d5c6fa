//! LVM2 physical volumes, read without device-mapper or the `lvm` binary: which bytes of a PV
//! hold what, and how to read each logical volume through its segment map.
//!
//! [`read_pv`] reads a PV's label ([`label`]), its metadata areas and both slots of each
//! ([`mda`], checksums verified, the circular buffer's wrap followed), keeping the VG metadata
//! texts. [`map_source`] takes every PV found in one source (one partition, several partitions
//! of a disk, a whole disk), parses the texts ([`config`], [`metadata`]) and answers, per PV,
//! which bytes are always copied (label, metadata areas, the space around the extents) and which
//! extents no LV uses, and per LV either its map over the source (linear and striped LVs whose
//! segments all lie in the source) or why it must be copied raw. Filesystems are none of this
//! crate's business: the `fs` crate reads each mappable LV through
//! [`imgstream_blockio::Mapped`].

#![forbid(unsafe_code)]

pub mod config;
mod crc;
mod group;
mod label;
mod mda;
pub mod metadata;

pub use group::{LogicalVolume, Placed, PvLayout, SourceMap, map_source};
pub use label::Label;
pub use mda::MetadataText;

/// Why a PV's label or metadata areas could not be read: the message names the structure and
/// its byte offset in the PV.
pub use imgstream_volume::ParseError as Error;

use imgstream_blockio::ReadAt;
use std::io;

/// A PV's label and the metadata texts of its areas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhysicalVolume {
    /// The label and PV header.
    pub label: Label,
    /// Every checksum-verified text, committed and pre-committed, of every metadata area.
    pub texts: Vec<MetadataText>,
}

/// Cheap check: "LABELONE" with type "LVM2 001" in one of sectors 0-3.
pub fn detect(volume: &dyn ReadAt) -> io::Result<bool> {
    Ok(label::find(volume)?.is_some())
}

/// Reads the label and every metadata area of the PV `volume`.
pub fn read_pv(volume: &dyn ReadAt) -> Result<PhysicalVolume, Error> {
    let label = label::read(volume)?.ok_or_else(|| Error::corrupt("LVM2 label", 0, "no label in sectors 0-3"))?;
    let mut texts = Vec::new();
    for area in &label.metadata_areas {
        if area.end > volume.size() {
            return Err(Error::corrupt(
                "LVM2 metadata area",
                area.start,
                format!("ends at byte {}, past the PV's {} bytes", area.end, volume.size()),
            ));
        }
        texts.extend(mda::read(volume, area)?);
    }
    Ok(PhysicalVolume { label, texts })
}

/// Parses one VG metadata text (for fuzzing and tests): the syntax, then the VG model.
pub fn parse_metadata(text: &[u8]) -> Result<metadata::VolumeGroup, String> {
    let section = config::parse(text).map_err(|e| e.to_string())?;
    metadata::volume_group(&section)
}

#[cfg(test)]
mod tests;
