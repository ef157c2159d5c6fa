//! Synthetic PVs built byte by byte (label, metadata area, slots, wrapped text): what the real
//! tools cannot be made to write here (a pre-committed slot, shared extents, bad checksums).
//! The integration tests check the same code against PVs written by `lvm` itself.

#![allow(clippy::indexing_slicing)] // test code: a panic is a failed test, with its message

use crate::config::{Value, parse};
use crate::{Placed, PvLayout, SourceMap, crc, map_source, read_pv};
use imgstream_blockio::Stretch;
use imgstream_extents::RangeSet;

const MIB: u64 = 1 << 20;
const AREA: u64 = 4096;
const UUID: [&str; 2] = ["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"];

/// A VG text: extents of 1 MiB from byte 1 MiB, 8 per PV; each LV is (name, segment body).
fn vg_text(seqno: u64, pvs: usize, lvs: &[(&str, &str)]) -> String {
    let pv_sections: String = (0..pvs)
        .map(|i| format!("pv{i} {{\nid = \"{}\"\ndevice = \"/dev/x\"\npe_start = 2048\npe_count = 8\n}}\n", UUID[i]))
        .collect();
    let lv_sections: String = lvs
        .iter()
        .map(|(name, body)| {
            format!(
                "{name} {{\nid = \"x\"\nstatus = [\"READ\", \"WRITE\", \"VISIBLE\"]\nsegment_count = 1\nsegment1 {{\nstart_extent = 0\n{body}\n}}\n}}\n"
            )
        })
        .collect();
    format!(
        "vg {{\nid = \"VG-ID\"\nseqno = {seqno}\nextent_size = 2048 # 1 MiB\nphysical_volumes {{\n{pv_sections}}}\nlogical_volumes {{\n{lv_sections}}}\n}}\ncontents = \"Text Format Volume Group\"\nversion = 1\n"
    )
}

fn linear(extents: u64, pv: &str, first: u64) -> String {
    format!("extent_count = {extents}\ntype = \"striped\"\nstripe_count = 1\nstripes = [\"{pv}\", {first}]")
}

/// A PV of 10 MiB: label in sector 1, one metadata area of `area_size` bytes at 4096 whose
/// slots hold `slots` (offset in the area, text), extents from 1 MiB.
fn pv_image(uuid: &str, area_size: u64, slots: &[(u64, &str)]) -> Vec<u8> {
    let mut image = vec![0u8; 10 * MIB as usize];
    let label = &mut image[512..1024];
    label[..8].copy_from_slice(b"LABELONE");
    label[8..16].copy_from_slice(&1u64.to_le_bytes());
    label[20..24].copy_from_slice(&32u32.to_le_bytes());
    label[24..32].copy_from_slice(b"LVM2 001");
    label[32..64].copy_from_slice(uuid.as_bytes());
    label[64..72].copy_from_slice(&(10 * MIB).to_le_bytes());
    label[72..80].copy_from_slice(&MIB.to_le_bytes()); // data area, then a NULL entry
    label[104..112].copy_from_slice(&AREA.to_le_bytes()); // metadata area, then a NULL entry
    label[112..120].copy_from_slice(&area_size.to_le_bytes());
    let sum = crc::checksum(&label[20..]);
    label[16..20].copy_from_slice(&sum.to_le_bytes());
    let area = AREA as usize;
    for (slot, (offset, text)) in slots.iter().enumerate() {
        let mut bytes = text.as_bytes().to_vec();
        bytes.push(0);
        // The circular buffer: what passes the area's end continues after the header.
        for (i, byte) in bytes.iter().enumerate() {
            let mut at = *offset as usize + i;
            if at >= area_size as usize {
                at = at - area_size as usize + 512;
            }
            image[area + at] = *byte;
        }
        let locn = area + 40 + 24 * slot;
        image[locn..locn + 8].copy_from_slice(&offset.to_le_bytes());
        image[locn + 8..locn + 16].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        image[locn + 16..locn + 20].copy_from_slice(&crc::checksum(&bytes).to_le_bytes());
    }
    let header = &mut image[area..area + 512];
    header[4..20].copy_from_slice(b" LVM2 x[5A%r0N*>");
    header[20..24].copy_from_slice(&1u32.to_le_bytes());
    header[24..32].copy_from_slice(&AREA.to_le_bytes());
    header[32..40].copy_from_slice(&area_size.to_le_bytes());
    let sum = crc::checksum(&header[4..]);
    header[..4].copy_from_slice(&sum.to_le_bytes());
    image
}

/// Maps PV images placed one after the other in a source.
fn map(images: &[Vec<u8>]) -> SourceMap {
    let pvs: Vec<_> = images.iter().map(|image| read_pv(image).unwrap()).collect();
    let placed: Vec<Placed<'_>> =
        pvs.iter().enumerate().map(|(i, pv)| Placed { pv, offset: i as u64 * 10 * MIB, size: 10 * MIB }).collect();
    map_source(&placed)
}

fn layout(map: &SourceMap, index: usize) -> &PvLayout {
    map.pvs[index].as_ref().unwrap_or_else(|e| panic!("PV {index} raw: {e}"))
}

fn lv<'a>(map: &'a SourceMap, name: &str) -> &'a crate::LogicalVolume {
    map.lvs.iter().find(|lv| lv.name == name).unwrap_or_else(|| panic!("no LV {name}"))
}

#[test]
fn a_linear_lv_maps_to_its_extents_and_unused_extents_are_free() {
    let text = vg_text(3, 1, &[("root", &linear(3, "pv0", 2))]);
    let map = map(&[pv_image(UUID[0], MIB - AREA, &[(512, &text)])]);
    let pv = layout(&map, 0);
    assert_eq!(pv.free, [MIB..3 * MIB, 6 * MIB..9 * MIB].into_iter().collect::<RangeSet>());
    assert_eq!(pv.always, [0..MIB, 9 * MIB..10 * MIB].into_iter().collect::<RangeSet>());
    assert_eq!((pv.vg.as_str(), pv.seqnos.as_slice(), pv.extent_size), ("vg", &[3][..], MIB));
    let root = lv(&map, "root");
    assert_eq!(root.map, Ok(vec![Stretch::linear(3 * MIB, 3 * MIB)]));
    assert_eq!((root.kind.as_str(), root.size), ("linear", 3 * MIB));
}

#[test]
fn a_text_wrapping_around_the_buffer_is_joined_before_its_checksum() {
    let text = vg_text(9, 1, &[("root", &linear(2, "pv0", 0))]);
    // A 4 KiB area: the text starts 300 bytes before its end.
    let image = pv_image(UUID[0], 4096, &[(4096 - 300, &text)]);
    let pv = read_pv(&image).unwrap();
    assert!(pv.texts[0].wrapped && pv.texts[0].text == text.as_bytes());
    let map = map(&[image]);
    assert!(layout(&map, 0).wrapped);
    assert!(lv(&map, "root").map.is_ok());
}

#[test]
fn a_precommitted_slot_adds_its_extents_and_a_changed_map_makes_the_lv_raw() {
    let committed = vg_text(4, 1, &[("root", &linear(2, "pv0", 0)), ("moved", &linear(1, "pv0", 3))]);
    let precommitted = vg_text(
        5,
        1,
        &[("root", &linear(2, "pv0", 0)), ("moved", &linear(1, "pv0", 7)), ("new", &linear(2, "pv0", 5))],
    );
    let map = map(&[pv_image(UUID[0], MIB - AREA, &[(512, &committed), (8192, &precommitted)])]);
    let pv = layout(&map, 0);
    assert!(pv.precommitted);
    assert_eq!(pv.seqnos, vec![4, 5]);
    // Used in either version: 0-1 root, 3 and 7 moved, 5-6 new; free: 2 and 4 only.
    assert_eq!(pv.free, [3 * MIB..4 * MIB, 5 * MIB..6 * MIB].into_iter().collect::<RangeSet>());
    assert!(lv(&map, "root").map.is_ok());
    assert!(lv(&map, "moved").map.as_ref().is_err_and(|e| e.contains("disagree")), "{:?}", lv(&map, "moved").map);
    assert!(lv(&map, "new").map.as_ref().is_err_and(|e| e.contains("not in every metadata version")));
}

#[test]
fn a_striped_lv_over_two_pvs_maps_both_columns_and_alone_it_is_raw() {
    let striped =
        "extent_count = 4\ntype = \"striped\"\nstripe_count = 2\nstripe_size = 128\nstripes = [\"pv0\", 1, \"pv1\", 0]";
    let text = vg_text(2, 2, &[("data", striped)]);
    let images = [pv_image(UUID[0], MIB - AREA, &[(512, &text)]), pv_image(UUID[1], MIB - AREA, &[(512, &text)])];
    let both = map(&images);
    let expected = Stretch { len: 4 * MIB, chunk: 65536, columns: vec![2 * MIB, 11 * MIB] };
    assert_eq!(lv(&both, "data").map, Ok(vec![expected]));
    assert_eq!(lv(&both, "data").kind, "striped");
    let alone = map(&images[..1]);
    let reason = lv(&alone, "data").map.clone().unwrap_err();
    assert!(reason.contains("pv1") && reason.contains("not in this source"), "{reason}");
    assert_eq!(layout(&alone, 0).free.total(), 6 * MIB);
}

#[test]
fn lvs_sharing_an_extent_and_lvs_built_on_by_others_are_raw() {
    let snapshot = "extent_count = 2\ntype = \"snapshot\"\nchunk_size = 8\norigin = \"origin\"\ncow_store = \"cow\"";
    // A mirror segment names its legs' first extents only, so its extents are taken generously.
    let mirror = "extent_count = 1\ntype = \"mirror\"\nmirror_count = 2\nmirrors = [\"pv0\", 1, \"pv0\", 6]";
    let text = vg_text(
        2,
        1,
        &[
            ("a", &linear(2, "pv0", 0)),
            ("b", mirror),
            ("origin", &linear(2, "pv0", 3)),
            ("cow", &linear(1, "pv0", 5)),
            ("snapshot0", snapshot),
        ],
    );
    let map = map(&[pv_image(UUID[0], MIB - AREA, &[(512, &text)])]);
    for (name, reason) in [
        ("a", "shares extents with LV b"),
        ("b", "mirror LV"),
        ("origin", "origin of old-style snapshot snapshot0"),
        ("cow", "COW store of snapshot snapshot0"),
        ("snapshot0", "old-style snapshot"),
    ] {
        let found = lv(&map, name).map.clone().unwrap_err();
        assert!(found.contains(reason), "{name}: {found}");
    }
    // Two striped segments mapping one extent in one version: lvm refuses the VG ("PV segments
    // corrupted"), and so do we, naming it.
    let text = vg_text(2, 1, &[("a", &linear(2, "pv0", 0)), ("b", &linear(2, "pv0", 1))]);
    let refused = self::map(&[pv_image(UUID[0], MIB - AREA, &[(512, &text)])]);
    let reason = refused.pvs[0].clone().unwrap_err();
    assert!(reason.contains("LV b: extents 1..3 of PV pv0 are mapped twice in this version"), "{reason}");
}

#[test]
fn damaged_labels_areas_and_texts_are_named_with_their_offsets() {
    let text = vg_text(3, 1, &[("root", &linear(3, "pv0", 2))]);
    let good = pv_image(UUID[0], MIB - AREA, &[(512, &text)]);
    let cases: [(usize, &str); 3] = [
        (512 + 40, "LVM2 label at byte 528: checksum"),
        (4096 + 100, "LVM2 metadata area header at byte 4096: checksum"),
        (4096 + 512 + 20, "LVM2 metadata area header at byte 4152: slot 0: text checksum"),
    ];
    for (at, message) in cases {
        let mut image = good.clone();
        image[at] ^= 1;
        let error = read_pv(&image).unwrap_err().to_string();
        assert!(error.starts_with(message), "{error}");
    }
    // A text that parses but has a segment past its PV's extents: the PV is raw, named.
    let past = vg_text(3, 1, &[("root", &linear(3, "pv0", 6))]);
    let reason = map(&[pv_image(UUID[0], MIB - AREA, &[(512, &past)])]).pvs[0].clone().unwrap_err();
    assert!(reason.contains("LV root: extents 6.. of PV pv0 past its 8 extents"), "{reason}");
}

#[test]
fn the_config_parser_reads_escapes_comments_and_arrays_and_rejects_bad_text() {
    let section = parse(b"a = \"x\\\"y\\\\z\" # comment\nb = [1, \"s\", -2]\nc {\nd = 1.5\ne { }\n}\n\0").unwrap();
    assert_eq!(section.str("a"), Some("x\"y\\z"));
    assert_eq!(section.get("b"), Some(&Value::Array(vec![Value::Int(1), Value::Str("s".into()), Value::Int(-2)])));
    assert_eq!(section.section("c").and_then(|c| c.get("d")), Some(&Value::Float(1.5)));
    for (bad, line) in
        [(&b"a = \"open"[..], 1), (b"a\n= [1 2]", 2), (b"a b", 1), (b"}", 1), (b"a {\n", 2), (b"x = --", 1)]
    {
        let error = parse(bad).unwrap_err();
        assert_eq!(error.line, line, "{error}");
    }
    let deep = "a {".repeat(40);
    assert!(parse(deep.as_bytes()).unwrap_err().problem.contains("nested"));
}
