//! LVM2: `disk`, `part` and `info` on PVs whose metadata the real `lvm` tools wrote on loop
//! devices. There is no device-mapper here, so LVs are never activated: each LV's filesystem is
//! made in a file and its bytes are laid at the LV's extents, as `lvs` reports them (dm-stripe's
//! chunk order for striped LVs). Judged by partclone (per-LV oracle images), e2fsck and debugfs
//! on each LV read back from the output, `pvck` and `vgcfgbackup` on the output's metadata.

#![allow(clippy::indexing_slicing)] // test code: a panic is a failed test, with its message

use crate::disk::{Borg, LoopDevice, extract, free_bytes_per_oracle, oracle_image, sfdisk};
use crate::util::*;
use crate::xfs::{Mounted, age_offline, freesp, mkfs_xfs, protofile};
use serde_json::Value;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// GPT type of a Linux LVM partition.
const LVM_TYPE: &str = "E6D6D379-F507-44C2-A23C-238F2A3DF928";
const MIB: u64 = 1 << 20;

/// Writes `len` random bytes to a new file: the stale data free space holds.
pub(crate) fn random_file(path: &Path, len: u64) {
    use std::io::Read;
    let mut random = File::open("/dev/urandom").unwrap().take(len);
    std::io::copy(&mut random, &mut File::create(path).unwrap()).unwrap();
}

/// `lvm` confined to our loop devices: no activation, no device-mapper, no /etc/lvm backups.
pub(crate) struct Lvm {
    config: String,
    devices: Vec<LoopDevice>,
}

impl Lvm {
    /// Attaches a loop device over each byte range of `image`.
    pub(crate) fn over(image: &Path, ranges: &[Range<u64>]) -> Self {
        let devices: Vec<LoopDevice> = ranges
            .iter()
            .map(|r| {
                let (offset, len) = (r.start.to_string(), (r.end - r.start).to_string());
                LoopDevice::attach(image, &["-o", &offset, "--sizelimit", &len])
            })
            .collect();
        let accept: Vec<String> = devices.iter().map(|d| format!("\"a|^{}$|\"", d.path().display())).collect();
        let config = format!(
            "global {{ activation = 0 }} devices {{ use_devicesfile = 0 filter = [ {}, \"r|.*|\" ] }} backup {{ backup = 0 archive = 0 }}",
            accept.join(", ")
        );
        Self { config, devices }
    }

    /// A loop device over the whole image.
    pub(crate) fn whole(image: &Path) -> Self {
        Self::over(image, std::slice::from_ref(&(0..std::fs::metadata(image).unwrap().len())))
    }

    pub(crate) fn command(&self, command: &str) -> Command {
        let mut lvm = Command::new("lvm");
        lvm.arg(command).arg("--config").arg(&self.config).env("LVM_SUPPRESS_FD_WARNINGS", "1");
        lvm
    }

    pub(crate) fn run(&self, command: &str, args: &[&str]) -> String {
        String::from_utf8(run_ok(self.command(command).args(args)).stdout).unwrap()
    }

    pub(crate) fn dev(&self, index: usize) -> String {
        self.devices[index].path().display().to_string()
    }

    /// A report as rows of fields (`--separator ;`, sizes in bytes).
    fn report(&self, command: &str, args: &[&str]) -> Vec<Vec<String>> {
        let common = ["--noheadings", "--units", "b", "--nosuffix", "--separator", ";"];
        let text = self.run(command, &[&common[..], args].concat());
        text.lines()
            .map(|l| l.trim().split(';').map(str::to_owned).collect())
            .filter(|r: &Vec<String>| r != &[""])
            .collect()
    }

    /// Where LV `vg/lv` lies, in image bytes (`offsets` = where each loop device starts).
    pub(crate) fn layout(&self, lv: &str, offsets: &[u64]) -> LvLayout {
        let vg = lv.split('/').next().unwrap();
        let extent: u64 = self.report("vgs", &["-o", "vg_extent_size", vg])[0][0].parse().unwrap();
        let mut segments = Vec::new();
        for row in self.report("lvs", &["-o", "seg_size_pe,stripe_size,seg_pe_ranges", lv]) {
            let mut columns = Vec::new();
            for range in row[2].split_whitespace() {
                let (dev, extents) = range.rsplit_once(':').unwrap();
                let first: u64 = extents.split('-').next().unwrap().parse().unwrap();
                let index = (0..self.devices.len()).find(|&i| self.dev(i) == dev).unwrap();
                columns.push(offsets[index] + self.pe_start(index) + first * extent);
            }
            let len = row[0].parse::<u64>().unwrap() * extent;
            let chunk = if columns.len() > 1 { row[1].parse().unwrap() } else { len };
            segments.push(Segment { len, chunk, columns });
        }
        LvLayout { segments }
    }

    fn pe_start(&self, index: usize) -> u64 {
        self.report("pvs", &["-o", "pe_start", &self.dev(index)])[0][0].parse().unwrap()
    }

    /// Image byte ranges of the extents no LV uses, on every device.
    pub(crate) fn free_extents(&self, offsets: &[u64]) -> Vec<Range<u64>> {
        let mut free = Vec::new();
        for (index, offset) in offsets.iter().enumerate() {
            let rows = self.report(
                "pvs",
                &["--segments", "-o", "pvseg_start,pvseg_size,lv_name,vg_extent_size", &self.dev(index)],
            );
            for row in rows.iter().filter(|r| r[2].is_empty()) {
                let extent: u64 = row[3].parse().unwrap();
                let start = offset + self.pe_start(index) + row[0].parse::<u64>().unwrap() * extent;
                free.push(start..start + row[1].parse::<u64>().unwrap() * extent);
            }
        }
        free
    }

    /// `vgcfgbackup` of `vg`.
    pub(crate) fn backup(&self, vg: &str, dir: &Path) -> String {
        let file = dir.join(format!("{vg}.vgcfg"));
        self.run("vgcfgbackup", &["-f", file.to_str().unwrap(), vg]);
        let text = std::fs::read_to_string(&file).unwrap();
        // Without the header (command line, time) and the device hints (loop device names).
        let body = &text[text.find(&format!("\n{vg} {{")).unwrap()..];
        body.lines().filter(|l| !l.trim_start().starts_with("device = ")).collect::<Vec<_>>().join("\n")
    }
}

/// A stretch of an LV: `len` bytes striped over `columns` (image offsets) in `chunk`-byte chunks.
pub(crate) struct Segment {
    len: u64,
    chunk: u64,
    columns: Vec<u64>,
}

/// An LV's segments, in order.
pub(crate) struct LvLayout {
    segments: Vec<Segment>,
}

impl LvLayout {
    pub(crate) fn size(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// dm-stripe's order: chunk `c` of a segment is chunk `c / N` of column `c % N`.
    fn pieces(&self) -> Vec<(Range<usize>, usize)> {
        let mut pieces = Vec::new();
        let mut lv = 0usize;
        for segment in &self.segments {
            let n = segment.columns.len() as u64;
            for c in 0..segment.len / segment.chunk {
                let at = segment.columns[(c % n) as usize] + (c / n) * segment.chunk;
                pieces.push((lv..lv + segment.chunk as usize, at as usize));
                lv += segment.chunk as usize;
            }
        }
        pieces
    }

    /// Writes the LV's bytes into the image.
    pub(crate) fn place(&self, image: &mut [u8], lv: &[u8]) {
        for (range, at) in self.pieces() {
            image[at..at + range.len()].copy_from_slice(&lv[range]);
        }
    }

    /// Reads the LV's bytes from the image.
    pub(crate) fn gather(&self, image: &[u8]) -> Vec<u8> {
        let mut lv = vec![0u8; self.size() as usize];
        for (range, at) in self.pieces() {
            let len = range.len();
            lv[range].copy_from_slice(&image[at..at + len]);
        }
        lv
    }

    /// The image byte ranges it occupies.
    pub(crate) fn ranges(&self) -> Vec<Range<u64>> {
        self.pieces().into_iter().map(|(r, at)| at as u64..(at + r.len()) as u64).collect()
    }
}

/// An aged ext4 image of `len` bytes: random garbage, mkfs.ext4 with 40 files, every other file
/// deleted again (debugfs), so that free blocks hold stale data; `seed` varies the file sizes.
pub(crate) fn aged_ext4(dir: &Path, name: &str, len: u64, seed: u64) -> Vec<u8> {
    let image = dir.join(format!("{name}.ext4"));
    random_file(&image, len);
    let content = dir.join(format!("{name}-content"));
    std::fs::create_dir_all(&content).unwrap();
    for i in 0..40u64 {
        let size = 2048 + (seed * 7919 + i * 104_729) % (len / 80);
        random_file(&content.join(format!("f{i}")), size);
    }
    run_ok(Command::new("mkfs.ext4").args(["-q", "-F", "-E", "nodiscard", "-d"]).arg(&content).arg(&image));
    let deletions: String = (0..40).step_by(2).map(|i| format!("rm /f{i}\n")).collect();
    let script = dir.join(format!("{name}.debugfs"));
    std::fs::write(&script, deletions).unwrap();
    run_ok(Command::new("debugfs").arg("-w").arg("-f").arg(&script).arg(&image).stderr(Stdio::null()));
    std::fs::read(&image).unwrap()
}

/// Lays an aged ext4 (see [`aged_ext4`]) at the extents of each LV `(name, layout, seed)` of
/// the image file `path`; returns the image's new bytes and the filesystems.
fn fill_lvs(path: &Path, dir: &Path, lvs: &[(&str, &LvLayout, u64)]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut image = std::fs::read(path).unwrap();
    let mut filesystems = Vec::new();
    for (name, layout, seed) in lvs {
        let filesystem = aged_ext4(dir, name, layout.size(), *seed);
        layout.place(&mut image, &filesystem);
        filesystems.push(filesystem);
    }
    std::fs::write(path, &image).unwrap();
    (image, filesystems)
}

/// The oracle for a PV image: the source with free extents zeroed and each ext4 LV
/// `(layout, filesystem)` replaced by its partclone image.
fn expected_image(image: &[u8], free: &[Range<u64>], lvs: &[(&LvLayout, &[u8])], dir: &Path) -> Vec<u8> {
    let mut expected = image.to_vec();
    for range in free {
        expected[range.start as usize..range.end as usize].fill(0);
    }
    for (layout, filesystem) in lvs {
        layout.place(&mut expected, &ext4_oracle(filesystem, dir));
    }
    expected
}

/// Streams `imgstream COMMAND source` to `dir/out.img` and checks it byte for byte against
/// [`expected_image`]; returns the output and stderr.
fn stream_against_oracle(
    command: &str,
    source: &Path,
    dir: &Path,
    image: &[u8],
    free: &[Range<u64>],
    lvs: &[(&LvLayout, &[u8])],
) -> (Vec<u8>, String) {
    let (output, stderr) = stream_to_file(&[command], source, &dir.join("out.img"));
    let expected = expected_image(image, free, lvs, dir);
    assert_same_bytes(&format!("imgstream {command} {} vs oracle", source.display()), &output, &expected);
    (output, stderr)
}

/// A swap area of `len` bytes over garbage.
fn swap_area(dir: &Path, len: u64) -> Vec<u8> {
    let image = dir.join("swap.img");
    random_file(&image, len);
    run_ok(Command::new("mkswap").arg("-q").arg(&image));
    std::fs::read(&image).unwrap()
}

/// Runs `imgstream ARGS` with stdout to a file; returns its bytes and stderr.
pub(crate) fn stream_to_file(args: &[&str], source: &Path, out: &Path) -> (Vec<u8>, String) {
    let output = run_ok(imgstream().args(args).arg(source).stdout(File::create(out).unwrap()));
    (std::fs::read(out).unwrap(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// The partclone oracle of one ext4 LV: its bytes with free blocks zeroed.
pub(crate) fn ext4_oracle(lv: &[u8], dir: &Path) -> Vec<u8> {
    let file = dir.join("lv-oracle-source.img");
    std::fs::write(&file, lv).unwrap();
    oracle_image("ext4", "ext4", &file, dir)
}

/// The LV read back from the output checks clean and holds the same files as the source's.
pub(crate) fn check_ext4_lv(output: &[u8], source: &[u8], layout: &LvLayout, dir: &Path, name: &str) {
    let ours = dir.join(format!("{name}-out.img"));
    let theirs = dir.join(format!("{name}-src.img"));
    std::fs::write(&ours, layout.gather(output)).unwrap();
    std::fs::write(&theirs, layout.gather(source)).unwrap();
    run_ok(Command::new("e2fsck").args(["-f", "-n"]).arg(&ours));
    let (a, b) = (dir.join(format!("{name}-out-files")), dir.join(format!("{name}-src-files")));
    for (image, target) in [(&ours, &a), (&theirs, &b)] {
        std::fs::create_dir_all(target).unwrap();
        let command = format!("rdump / {}", target.display());
        run_ok(Command::new("debugfs").arg("-R").arg(command).arg(image).stderr(Stdio::null()));
    }
    run_ok(Command::new("diff").arg("-r").arg(&a).arg(&b));
    assert!(std::fs::read_dir(a.join("")).unwrap().count() > 10, "{name}: files were restored");
}

fn tools(list: &[&str]) -> bool {
    is_root() && list.iter().all(|t| have_tool(t))
}

/// The PV partition's LVs in `info --json`: name -> (type, filesystem, status, reason).
fn info_lvs(volume: &Value) -> Vec<(String, String, String, String, String)> {
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    volume["container"]["volumes"]
        .as_array()
        .unwrap_or_else(|| panic!("no container in {volume}"))
        .iter()
        .map(|v| (text(&v["name"]), text(&v["type"]), text(&v["filesystem"]), text(&v["status"]), text(&v["reason"])))
        .collect()
}

fn info_json(source: &Path) -> Value {
    serde_json::from_slice(&run_ok(imgstream().args(["info", "--json"]).arg(source)).stdout).unwrap()
}

/// Acceptance 1: the installer layout (ESP FAT32, /boot ext4, one PV with root ext4, home XFS
/// and swap LVs), aged: `disk` equals the per-LV oracle byte for byte (partclone; for XFS,
/// `xfs_db freesp` but the free list, as tests/xfs.rs judges XFS), elides ≥ 97% of the truly
/// free bytes, and its metadata, filesystems and files read back with the real tools.
#[test]
fn root_lvm_installer_layout_is_elided_through_the_pv() {
    if !tools(&[
        "lvm",
        "sfdisk",
        "mkfs.fat",
        "mcopy",
        "partclone.fat",
        "partclone.extfs",
        "debugfs",
        "e2fsck",
        "mkswap",
        "fsck.fat",
        "dumpe2fs",
        "mkfs.xfs",
        "xfs_db",
        "xfs_repair",
    ]) {
        return;
    }
    let dir = scratch();
    let dir = dir.path();
    let disk = dir.join("installer.img");
    random_file(&disk, 200 * MIB);
    let script = format!("label: gpt\nsize=40MiB, type=U\nsize=32MiB, type=L\ntype={LVM_TYPE}\n");
    let parts = partition(&disk, &script);
    let mut image = std::fs::read(&disk).unwrap();
    // ESP: FAT32 with files, half of them deleted again (mtools, no mount).
    let esp = dir.join("esp.img");
    random_file(&esp, parts[0].end - parts[0].start);
    run_ok(Command::new("mkfs.fat").args(["-F", "32", "-s", "1", "-S", "512"]).arg(&esp).stdout(Stdio::null()));
    for i in 0..12u64 {
        let file = dir.join(format!("efi{i}.bin"));
        random_file(&file, 50_000 + i * 40_000);
        run_ok(Command::new("mcopy").arg("-i").arg(&esp).arg(&file).arg(format!("::efi{i}.bin")));
    }
    for i in (0..12).step_by(2) {
        run_ok(Command::new("mdel").arg("-i").arg(&esp).arg(format!("::efi{i}.bin")));
    }
    let boot = aged_ext4(dir, "boot", parts[1].end - parts[1].start, 3);
    image[parts[0].start as usize..parts[0].end as usize].copy_from_slice(&std::fs::read(&esp).unwrap());
    image[parts[1].start as usize..parts[1].end as usize].copy_from_slice(&boot);
    std::fs::write(&disk, &image).unwrap();
    // The PV, its VG and LVs, written by lvm on a loop device over partition 3.
    let vg = format!("imgst_inst{}", std::process::id());
    let (root, home, swap) = (format!("{vg}/root"), format!("{vg}/home"), format!("{vg}/swap"));
    let lvm = Lvm::over(&disk, &parts[2..3]);
    lvm.run("pvcreate", &[&lvm.dev(0)]);
    lvm.run("vgcreate", &["-s", "4M", &vg, &lvm.dev(0)]);
    // Home is 64 MiB, the smallest XFS mkfs.xfs makes (4 AGs of 16 MiB).
    for (name, size) in [("root", "40M"), ("home", "64M"), ("swap", "8M")] {
        lvm.run("lvcreate", &["-an", "-Zn", "-Wn", "-L", size, "-n", name, &vg]);
    }
    let offsets = [parts[2].start];
    let layouts: Vec<LvLayout> = [&root, &home, &swap].iter().map(|lv| lvm.layout(lv, &offsets)).collect();
    let free_extents = lvm.free_extents(&offsets);
    let backup = lvm.backup(&vg, dir);
    drop(lvm);
    let swap_fs = swap_area(dir, layouts[2].size());
    let home_file = aged_xfs(dir, layouts[1].size());
    let home_fs = std::fs::read(&home_file).unwrap();
    let mut image = std::fs::read(&disk).unwrap();
    layouts[2].place(&mut image, &swap_fs);
    layouts[1].place(&mut image, &home_fs);
    std::fs::write(&disk, &image).unwrap();
    let (image, filesystems) = fill_lvs(&disk, dir, &[("root", &layouts[0], 4)]);
    let root_fs = &filesystems[0];
    let before = sha256(&disk);

    let (output, stderr) = stream_to_file(&["disk"], &disk, &dir.join("out.img"));
    assert_eq!(sha256(&disk), before, "the source changed");
    assert!(!stderr.contains("warning"), "{stderr}");

    // The oracle: partclone per filesystem (each LV on its own bytes, written back at its
    // extents), the swap header page, free extents zero, everything else as it was.
    let mut expected = expected_image(&image, &free_extents, &[(&layouts[0], root_fs)], dir);
    let mut home_expected = home_fs.clone();
    let home_free = freesp(&home_file);
    for range in &home_free {
        home_expected[range.clone()].fill(0);
    }
    layouts[1].place(&mut expected, &home_expected);
    let esp_oracle = oracle_image("vfat", "fat", &extract(&image, &parts[0], &dir.join("p1.img")), dir);
    expected[parts[0].start as usize..parts[0].end as usize].copy_from_slice(&esp_oracle);
    let boot_oracle = oracle_image("ext4", "ext4", &extract(&image, &parts[1], &dir.join("p2.img")), dir);
    expected[parts[1].start as usize..parts[1].end as usize].copy_from_slice(&boot_oracle);
    let swap_file = dir.join("swap-lv.img");
    std::fs::write(&swap_file, &swap_fs).unwrap();
    layouts[2].place(&mut expected, &oracle_image("swap", "swap", &swap_file, dir));
    assert_same_bytes("installer disk vs per-LV oracle", &output, &expected);

    // ≥ 97% of the truly free bytes elided: each filesystem's own free count plus free extents.
    let lv_file = |name: &str, bytes: &[u8]| {
        let path = dir.join(format!("{name}-free.img"));
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let truly_free = free_bytes_per_oracle("vfat", &dir.join("p1.img"))
        + free_bytes_per_oracle("ext4", &dir.join("p2.img"))
        + free_bytes_per_oracle("ext4", &lv_file("root", root_fs))
        + home_free.iter().map(|r| r.len() as u64).sum::<u64>()
        + free_bytes_per_oracle("swap", &swap_file)
        + free_extents.iter().map(|r| r.end - r.start).sum::<u64>();
    // Sectors that are zero in the output and not in the source (free units are whole sectors).
    let zero = [0u8; 512];
    let elided =
        output.chunks(512).zip(image.chunks(512)).filter(|(o, s)| *o == zero && *s != zero).count() as u64 * 512;
    println!("installer layout: elided {elided} of {truly_free} truly free bytes");
    assert!(elided * 100 >= truly_free * 97, "elided {elided} of {truly_free} truly free bytes");

    // The output's metadata and filesystems read back with the real tools.
    let lvm = Lvm::over(&dir.join("out.img"), &parts[2..3]);
    run_ok(lvm.command("pvck").arg(lvm.dev(0)));
    assert_eq!(lvm.backup(&vg, dir), backup, "vgcfgbackup of the output");
    drop(lvm);
    check_ext4_lv(&output, &image, &layouts[0], dir, "root");
    check_xfs_lv(&output, &image, &layouts[1], dir);
    let boot_out = extract(&output, &parts[1], &dir.join("boot-out.img"));
    run_ok(Command::new("e2fsck").args(["-f", "-n"]).arg(&boot_out));
    run_ok(Command::new("fsck.fat").arg("-n").arg(extract(&output, &parts[0], &dir.join("esp-out.img"))));

    // info: the PV partition holds the three LVs, each with its filesystem, all elided.
    let info = info_json(&disk);
    let lvs = info_lvs(&info["partitions"][2]["volume"]);
    let summary: Vec<(String, String, String, String)> =
        lvs.iter().map(|(n, t, f, s, _)| (n.clone(), t.clone(), f.clone(), s.clone())).collect();
    let row = |name: &str, fs: &str| (format!("{vg}/{name}"), "linear".to_owned(), fs.to_owned(), "elided".to_owned());
    assert_eq!(summary, vec![row("root", "ext4"), row("home", "xfs"), row("swap", "swap")]);
    let text = String::from_utf8(run_ok(imgstream().arg("info").arg(&disk)).stdout).unwrap();
    assert!(text.contains(&format!("LVM2 PV pv0 of VG {vg}")) && text.contains(&format!("{vg}/root")), "{text}");
}

/// An aged XFS of `len` bytes (64 MiB or more) over garbage, made and aged as tests/xfs.rs does
/// (mkfs.xfs from a protofile, every other file's inode zapped, xfs_repair frees its blocks).
fn aged_xfs(dir: &Path, len: u64) -> PathBuf {
    let image = dir.join("home.xfs");
    random_file(&image, len);
    run_ok(mkfs_xfs().args(["-q", "-f", "-p"]).arg(protofile(dir, 400)).arg(&image));
    age_offline(&image);
    image
}

/// The XFS LV read back from the output passes `xfs_repair -n`, and through read-only loop
/// mounts (`nouuid`: both have the same UUID) holds the same files as the source's.
fn check_xfs_lv(output: &[u8], source: &[u8], layout: &LvLayout, dir: &Path) {
    let (ours, theirs) = (dir.join("home-out.xfs"), dir.join("home-src.xfs"));
    std::fs::write(&ours, layout.gather(output)).unwrap();
    std::fs::write(&theirs, layout.gather(source)).unwrap();
    run_ok(Command::new("xfs_repair").args(["-n", "-f"]).arg(&ours));
    let devices = [LoopDevice::attach(&ours, &["-r"]), LoopDevice::attach(&theirs, &["-r"])];
    let points = [dir.join("home-out"), dir.join("home-src")];
    let _mounted: Vec<Mounted> =
        devices.iter().zip(&points).map(|(d, p)| Mounted::new(d.path(), p.clone(), "ro,norecovery,nouuid")).collect();
    run_ok(Command::new("diff").arg("-r").arg(&points[0]).arg(&points[1]));
    assert!(std::fs::read_dir(points[0].join("a")).unwrap().count() > 100, "home: files were read back");
}

/// Writes `text` to `dir/name` and returns the path.
pub(crate) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Partitions a new random disk of `mib` MiB with an sfdisk script; returns the partitions.
fn gpt_disk(path: &Path, mib: u64, script: &str) -> Vec<Range<u64>> {
    random_file(path, mib * MIB);
    partition(path, script)
}

/// Runs sfdisk with `script` on the image `path`; returns the partitions' byte ranges.
fn partition(path: &Path, script: &str) -> Vec<Range<u64>> {
    let script_file = write(path.parent().unwrap(), "sfdisk-script", script);
    run_ok(Command::new("sh").arg("-c").arg("sfdisk -q \"$1\" < \"$2\"").arg("sh").arg(path).arg(script_file));
    sfdisk(path).partitions.iter().map(|p| p.1.clone()).collect()
}

/// Acceptance 2: an LV striped over two PVs of one disk is read through dm-stripe's layout and
/// elided exactly, by `disk` and by `backup-disk`; imaged alone, a PV copies the LV's extents
/// raw, naming why.
#[test]
fn root_lvm_striped_lv_over_two_pvs_of_one_disk() {
    if !tools(&["lvm", "sfdisk", "partclone.extfs", "debugfs", "e2fsck"]) {
        return;
    }
    let dir = scratch();
    let dir = dir.path();
    let disk = dir.join("striped.img");
    let script = format!("label: gpt\nsize=40MiB, type={LVM_TYPE}\ntype={LVM_TYPE}\n");
    let parts = gpt_disk(&disk, 84, &script);
    let vg = format!("imgst_str{}", std::process::id());
    let lvm = Lvm::over(&disk, &parts);
    lvm.run("pvcreate", &[&lvm.dev(0), &lvm.dev(1)]);
    lvm.run("vgcreate", &["-s", "4M", &vg, &lvm.dev(0), &lvm.dev(1)]);
    lvm.run("lvcreate", &["-an", "-Zn", "-Wn", "-i", "2", "-I", "64k", "-L", "48M", "-n", "data", &vg]);
    let offsets = [parts[0].start, parts[1].start];
    let layout = lvm.layout(&format!("{vg}/data"), &offsets);
    assert_eq!(layout.segments[0].columns.len(), 2, "lvs reports two stripes");
    let free_extents = lvm.free_extents(&offsets);
    drop(lvm);
    let (image, filesystems) = fill_lvs(&disk, dir, &[("data", &layout, 12)]);

    let (output, stderr) =
        stream_against_oracle("disk", &disk, dir, &image, &free_extents, &[(&layout, &filesystems[0])]);
    assert!(!stderr.contains("warning"), "{stderr}");
    check_ext4_lv(&output, &image, &layout, dir, "data");
    let info = info_json(&disk);
    for partition in 0..2 {
        let lvs = info_lvs(&info["partitions"][partition]["volume"]);
        assert_eq!(lvs.len(), 1, "{lvs:?}");
        assert_eq!((lvs[0].1.as_str(), lvs[0].2.as_str(), lvs[0].3.as_str()), ("striped", "ext4", "elided"), "{lvs:?}");
    }

    // backup-disk streams each partition on its own, yet through the same whole-disk plan:
    // restored, the disk equals the disk stream, the striped LV elided in both PVs.
    if have_tool("borg") {
        let borg = Borg::init(dir);
        run_ok(borg.imgstream(&["backup-disk", "--name", "striped"]).arg(&disk));
        let restored = dir.join("restored.img");
        run_ok(borg.imgstream(&["restore-disk", "--name", "striped"]).arg(&restored));
        assert_same_bytes("backup-disk, restore-disk", &std::fs::read(&restored).unwrap(), &output);
    }

    // One PV alone: the LV has extents elsewhere, so its extents here are copied raw, named.
    let pv1 = extract(&image, &parts[0], &dir.join("pv1.img"));
    let (alone, stderr) = stream_to_file(&["part"], &pv1, &dir.join("pv1-out.img"));
    assert!(stderr.contains(&format!("LV {vg}/data")) && stderr.contains("not in this source"), "{stderr}");
    for range in layout.ranges().iter().filter(|r| r.start < parts[0].end) {
        let local = (range.start - parts[0].start) as usize..(range.end - parts[0].start) as usize;
        assert_eq!(alone[local.clone()], image[range.start as usize..range.end as usize], "extent copied raw");
    }
    let lvs = info_lvs(&info_json(&pv1)["volume"]);
    assert_eq!(lvs[0].3, "raw", "{lvs:?}");
}

/// Acceptance 2: a VG over two disks; imaging one disk, the LV spanning both is copied raw and
/// named, the LV wholly on this disk is elided.
#[test]
fn root_lvm_vg_over_two_disks_copies_the_spanning_lv_raw() {
    if !tools(&["lvm", "partclone.extfs", "debugfs"]) {
        return;
    }
    let dir = scratch();
    let dir = dir.path();
    // Whole-disk PVs, no partition table.
    let (a, b) = (dir.join("a.img"), dir.join("b.img"));
    random_file(&a, 40 * MIB);
    random_file(&b, 40 * MIB);
    let vg = format!("imgst_two{}", std::process::id());
    let lvm = TwoDisks::new(&a, &b);
    lvm.0.run("pvcreate", &[&lvm.0.dev(0), &lvm.1.dev(0)]);
    lvm.0.run("vgcreate", &["-s", "4M", &vg, &lvm.0.dev(0), &lvm.1.dev(0)]);
    lvm.0.run("lvcreate", &["-an", "-Zn", "-Wn", "-L", "16M", "-n", "local", &vg, &lvm.0.dev(0)]);
    lvm.0.run("lvcreate", &["-an", "-Zn", "-Wn", "-L", "40M", "-n", "span", &vg]);
    let local = lvm.0.layout(&format!("{vg}/local"), &[0]);
    let span_rows = lvm.0.report("lvs", &["-o", "seg_pe_ranges", &format!("{vg}/span")]);
    assert_eq!(span_rows.len(), 2, "span has two segments: {span_rows:?}");
    let free_a: Vec<Range<u64>> = lvm.0.free_extents(&[0]);
    drop(lvm);
    let (image, filesystems) = fill_lvs(&a, dir, &[("local", &local, 23)]);

    let (_, stderr) = stream_against_oracle("disk", &a, dir, &image, &free_a, &[(&local, &filesystems[0])]);
    assert!(stderr.contains(&format!("LV {vg}/span")) && stderr.contains("not in this source"), "{stderr}");
    let lvs = info_lvs(&info_json(&a)["volume"]);
    let span = lvs.iter().find(|l| l.0.ends_with("/span")).unwrap();
    assert_eq!(span.3, "raw");
    assert!(span.4.contains("not in this source"), "{span:?}");
}

/// `lvm` seeing two whole disks.
struct TwoDisks(Lvm, Lvm);

impl TwoDisks {
    fn new(a: &Path, b: &Path) -> Self {
        let first = Lvm::whole(a);
        let second = Lvm::whole(b);
        // Both configurations accept both devices.
        let accept = format!("\"a|^{}$|\", \"a|^{}$|\"", first.dev(0), second.dev(0));
        let config = |lvm: &Lvm| lvm.config.replace(&format!("\"a|^{}$|\"", lvm.dev(0)), &accept);
        let (c1, c2) = (config(&first), config(&second));
        let mut pair = Self(first, second);
        pair.0.config = c1;
        pair.1.config = c2;
        pair
    }
}

/// A whole-file PV of `mib` MiB over garbage, `pvcreate` with `options`, in a new VG of
/// `extent`-sized extents: the image, the VG name and the `lvm` that sees it.
fn single_pv(dir: &Path, name: &str, mib: u64, options: &[&str], extent: &str) -> (PathBuf, String, Lvm) {
    let pv = dir.join(format!("{name}.img"));
    random_file(&pv, mib * MIB);
    let vg = format!("imgst_{name}{}", std::process::id());
    let lvm = Lvm::whole(&pv);
    lvm.run("pvcreate", &[options, &[&lvm.dev(0)]].concat());
    lvm.run("vgcreate", &["-s", extent, &vg, &lvm.dev(0)]);
    (pv, vg, lvm)
}

/// The committed slot's (offset, size) and the area size of the first metadata area, per pvck.
fn mda_slot(lvm: &Lvm) -> (u64, u64, u64) {
    let text = lvm.run("pvck", &["--dump", "headers", &lvm.dev(0)]);
    let field = |name: &str| -> u64 {
        let line = text.lines().find(|l| l.trim().starts_with(name)).unwrap_or_else(|| panic!("no {name} in {text}"));
        line.trim()[name.len()..].trim().parse().unwrap()
    };
    (field("mda_header_1.raw_locn[0].offset"), field("mda_header_1.raw_locn[0].size"), field("mda_header_1.size"))
}

/// Acceptance 2: metadata text that wraps around the circular buffer (a small metadata area,
/// many changes) is read, checksum and all, and the PV is elided exactly.
#[test]
fn root_lvm_metadata_text_wrapping_around_the_buffer() {
    if !tools(&["lvm", "partclone.extfs", "debugfs"]) {
        return;
    }
    let dir = scratch();
    let dir = dir.path();
    // The smallest metadata area lvm allows (60 KiB here), so that a few changes wrap it.
    let (pv, vg, lvm) = single_pv(dir, "wrap", 32, &["--metadatasize", "32k", "--dataalignment", "64k"], "1M");
    lvm.run("lvcreate", &["-an", "-Zn", "-Wn", "-L", "12M", "-n", "keep", &vg]);
    let mut wrapped = false;
    for round in 0..60 {
        lvm.run("lvcreate", &["-an", "-Zn", "-Wn", "-L", "1M", "-n", &format!("tmp{round}"), &vg]);
        lvm.run("lvremove", &["-f", &format!("{vg}/tmp{round}")]);
        let (offset, size, area) = mda_slot(&lvm);
        if offset + size > area {
            wrapped = true;
            break;
        }
    }
    assert!(wrapped, "pvck never showed the committed text wrapping");
    let keep = lvm.layout(&format!("{vg}/keep"), &[0]);
    let free = lvm.free_extents(&[0]);
    drop(lvm);
    let (image, filesystems) = fill_lvs(&pv, dir, &[("keep", &keep, 32)]);
    let (_, stderr) = stream_against_oracle("part", &pv, dir, &image, &free, &[(&keep, &filesystems[0])]);
    assert!(!stderr.contains("warning"), "{stderr}");
    let info = info_json(&pv);
    assert_eq!(info["volume"]["details"]["metadata_text"], "wraps around its circular buffer", "{info}");
}

/// Acceptance 2: `--pvmetadatacopies 2` puts a second metadata area at the end of the PV; both
/// are kept, the extents between are elided.
#[test]
fn root_lvm_two_metadata_copies_are_both_kept() {
    if !tools(&["lvm", "partclone.extfs", "debugfs"]) {
        return;
    }
    let dir = scratch();
    let dir = dir.path();
    let (pv, vg, lvm) = single_pv(dir, "copies", 32, &["--pvmetadatacopies", "2"], "1M");
    lvm.run("lvcreate", &["-an", "-Zn", "-Wn", "-L", "16M", "-n", "data", &vg]);
    let headers = lvm.run("pvck", &["--dump", "headers", &lvm.dev(0)]);
    assert!(headers.contains("mda_header_2"), "{headers}");
    let data = lvm.layout(&format!("{vg}/data"), &[0]);
    let free = lvm.free_extents(&[0]);
    drop(lvm);
    let (image, filesystems) = fill_lvs(&pv, dir, &[("data", &data, 42)]);
    stream_against_oracle("part", &pv, dir, &image, &free, &[(&data, &filesystems[0])]);
    let lvm = Lvm::whole(&dir.join("out.img"));
    let headers = lvm.run("pvck", &["--dump", "headers", &lvm.dev(0)]);
    assert!(headers.contains("mda_header_2.raw_locn[0].checksum"), "{headers}");
}

/// Acceptance 2: a metadata text whose checksum fails makes the PV raw, the reason named.
#[test]
fn root_lvm_corrupt_metadata_checksum_copies_the_pv_raw() {
    if !tools(&["lvm", "debugfs"]) {
        return;
    }
    let dir = scratch();
    let dir = dir.path();
    let (pv, vg, lvm) = single_pv(dir, "crc", 24, &[], "1M");
    lvm.run("lvcreate", &["-an", "-Zn", "-Wn", "-L", "12M", "-n", "data", &vg]);
    let data = lvm.layout(&format!("{vg}/data"), &[0]);
    let (offset, _, _) = mda_slot(&lvm);
    drop(lvm);
    let (mut image, _) = fill_lvs(&pv, dir, &[("data", &data, 52)]);
    // One byte of the committed text ("seqno" -> "seqnO"), in the area at 4096.
    let text_at = 4096 + offset as usize;
    let seqno = text_at + image[text_at..text_at + 4096].windows(5).position(|w| w == b"seqno").unwrap();
    image[seqno + 4] = b'O';
    std::fs::write(&pv, &image).unwrap();
    let lvm = Lvm::whole(&pv);
    let pvck = lvm.command("pvck").arg(lvm.dev(0)).output().unwrap();
    let pvck_says = String::from_utf8_lossy(&pvck.stderr).into_owned() + &String::from_utf8_lossy(&pvck.stdout);
    assert!(pvck_says.to_lowercase().contains("checksum"), "pvck agrees the text is bad: {pvck_says}");
    drop(lvm);
    let (output, stderr) = stream_to_file(&["part"], &pv, &dir.join("out.img"));
    assert!(stderr.contains("LVM2 PV") && stderr.contains("checksum"), "{stderr}");
    assert_same_bytes("corrupt PV copied raw", &output, &image);
    let info = info_json(&pv);
    assert_eq!(info["volume"]["status"], "raw");
    assert!(info["volume"]["reason"].as_str().unwrap().contains("text checksum"), "{info}");
}

/// An LV section for a metadata text: `segments` is the body of segment1.
fn lv_section(name: &str, visible: bool, extents: u64, segment: &str) -> String {
    let status = if visible { r#""READ", "WRITE", "VISIBLE""# } else { r#""READ", "WRITE""# };
    let id: String = format!("{name}{}", "x".repeat(38)).chars().filter(char::is_ascii_alphanumeric).take(32).collect();
    let id = format!(
        "{}-{}-{}-{}-{}-{}-{}",
        &id[0..6],
        &id[6..10],
        &id[10..14],
        &id[14..18],
        &id[18..22],
        &id[22..26],
        &id[26..32]
    );
    format!(
        "\t\t{name} {{\n\t\t\tid = \"{id}\"\n\t\t\tstatus = [{status}]\n\t\t\tflags = []\n\t\t\tsegment_count = 1\n\t\t\tsegment1 {{\n\t\t\t\tstart_extent = 0\n\t\t\t\textent_count = {extents}\n{segment}\n\t\t\t}}\n\t\t}}\n"
    )
}

fn linear(pe: u64) -> String {
    format!("\t\t\t\ttype = \"striped\"\n\t\t\t\tstripe_count = 1\n\t\t\t\tstripes = [\"pv0\", {pe}]")
}

/// Acceptance 5: an old-style snapshot (origin and COW), a thin pool with its hidden LVs and a
/// thin LV, and a raid1 LV with its images, restored by `vgcfgrestore` from an edited backup
/// (lvm cannot create them without device-mapper): all named and copied raw, never elided
/// through a map; a plain LV beside them is still elided.
#[test]
fn root_lvm_snapshots_thin_pools_and_raid_are_copied_raw() {
    if !tools(&["lvm", "partclone.extfs", "debugfs"]) {
        return;
    }
    let dir = scratch();
    let dir = dir.path();
    let (pv, vg, lvm) = single_pv(dir, "kinds", 64, &[], "2M");
    lvm.run("lvcreate", &["-an", "-Zn", "-Wn", "-L", "8M", "-n", "origin", &vg]);
    lvm.run("lvcreate", &["-an", "-Zn", "-Wn", "-L", "8M", "-n", "plain", &vg]);
    let backup = dir.join("kinds.vgcfg");
    lvm.run("vgcfgbackup", &["-f", backup.to_str().unwrap(), &vg]);
    let text = std::fs::read_to_string(&backup).unwrap();
    // Extents 0-3 origin, 4-7 plain; the rest are new.
    let added = [
        lv_section("snap", true, 2, &linear(8)),
        lv_section(
            "snapshot0",
            false,
            4,
            "\t\t\t\ttype = \"snapshot\"\n\t\t\t\tchunk_size = 8\n\t\t\t\torigin = \"origin\"\n\t\t\t\tcow_store = \"snap\"",
        ),
        lv_section(
            "pool",
            true,
            2,
            "\t\t\t\ttype = \"thin-pool\"\n\t\t\t\tmetadata = \"pool_tmeta\"\n\t\t\t\tpool = \"pool_tdata\"\n\t\t\t\ttransaction_id = 1\n\t\t\t\tchunk_size = 128\n\t\t\t\tdiscards = \"passdown\"\n\t\t\t\tzero_new_blocks = 1",
        ),
        lv_section("thin1", true, 4, "\t\t\t\ttype = \"thin\"\n\t\t\t\tthin_pool = \"pool\"\n\t\t\t\ttransaction_id = 0\n\t\t\t\tdevice_id = 1"),
        lv_section("lvol0_pmspare", false, 1, &linear(10)),
        lv_section("pool_tmeta", false, 1, &linear(11)),
        lv_section("pool_tdata", false, 2, &linear(12)),
        lv_section(
            "r1",
            true,
            1,
            "\t\t\t\ttype = \"raid1\"\n\t\t\t\tdevice_count = 2\n\t\t\t\tregion_size = 1024\n\t\t\t\traids = [\"r1_rmeta_0\", \"r1_rimage_0\", \"r1_rmeta_1\", \"r1_rimage_1\"]",
        ),
        lv_section("r1_rmeta_0", false, 1, &linear(14)),
        lv_section("r1_rimage_0", false, 1, &linear(15)),
        lv_section("r1_rmeta_1", false, 1, &linear(16)),
        lv_section("r1_rimage_1", false, 1, &linear(17)),
    ]
    .concat();
    let end = text.rfind("\t}\n\n}").expect("end of logical_volumes");
    let edited = format!("{}{added}{}", &text[..end], &text[end..]);
    let edited_file = write(dir, "edited.vgcfg", &edited);
    lvm.run("vgcfgrestore", &["--force", "-f", edited_file.to_str().unwrap(), &vg]);
    let listed = lvm.run("lvs", &["-a", "--noheadings", "-o", "lv_name,segtype", &vg]);
    for (name, kind) in
        [("snap", "linear"), ("pool", "thin-pool"), ("thin1", "thin"), ("r1", "raid1"), ("[r1_rimage_0]", "linear")]
    {
        assert!(listed.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == [name, kind]), "lvs -a: {listed}");
    }
    let origin = lvm.layout(&format!("{vg}/origin"), &[0]);
    let plain = lvm.layout(&format!("{vg}/plain"), &[0]);
    let free = lvm.free_extents(&[0]);
    drop(lvm);
    let (image, filesystems) = fill_lvs(&pv, dir, &[("origin", &origin, 62), ("plain", &plain, 63)]);

    // Everything but the free extents and the plain LV's free blocks is the source's.
    let (_, stderr) = stream_against_oracle("part", &pv, dir, &image, &free, &[(&plain, &filesystems[1])]);
    for named in ["origin of old-style snapshot", "thin LV", "thin pool", "raid1 LV"] {
        assert!(stderr.contains(named), "warning names {named:?}: {stderr}");
    }
    let lvs = info_lvs(&info_json(&pv)["volume"]);
    for (name, kind, _, status, reason) in &lvs {
        let short = name.rsplit('/').next().unwrap();
        let want = if short == "plain" { "elided" } else { "raw" };
        assert_eq!(status, want, "{name} ({kind}): {reason}");
    }
    assert!(
        lvs.iter().any(|l| l.0.ends_with("/pool_tmeta") && l.4.contains("metadata of thin-pool LV pool")),
        "{lvs:?}"
    );
}

/// lvm2's `calc_crc`: CRC-32 (reflected, polynomial 0xEDB88320) from 0xf597a6cf, no final xor.
fn lvm_crc(bytes: &[u8]) -> u32 {
    let mut crc = 0xf597_a6cfu32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    crc
}

/// Replaces the committed text (at `offset` in the metadata area at 4096, not wrapped) with
/// `text`, its checksum and the area header's recomputed as lvm writes them: only lvm's own
/// validation of the text can object.
fn rewrite_committed_text(image: &mut [u8], offset: u64, text: &str) {
    let header = 4096usize;
    let at = header + offset as usize;
    image[at..at + text.len()].copy_from_slice(text.as_bytes());
    image[header + 48..header + 56].copy_from_slice(&(text.len() as u64).to_le_bytes());
    image[header + 56..header + 60].copy_from_slice(&lvm_crc(text.as_bytes()).to_le_bytes());
    let sum = lvm_crc(&image[header + 4..header + 512]);
    image[header..header + 4].copy_from_slice(&sum.to_le_bytes());
}

/// Metadata that lvm refuses, checksums intact: a segment naming a volume the VG lacks or its
/// own LV, an LV whose second segment maps extents of its first, or whose first maps extents of
/// another LV, a `segment_count` that leaves a segment unread. Read through such a map, the
/// extents the segment really held would count as free (and be zeroed), so the PV is copied raw,
/// named.
#[test]
fn root_lvm_metadata_that_lvm_refuses_copies_the_pv_raw() {
    if !tools(&["lvm", "debugfs"]) {
        return;
    }
    let dir = scratch();
    let dir = dir.path();
    let (pv, vg, lvm) = single_pv(dir, "refused", 32, &[], "1M");
    // data: extents 0-7 and 12-19, other: 8-11.
    lvm.run("lvcreate", &["-an", "-Zn", "-Wn", "-L", "8M", "-n", "data", &vg]);
    lvm.run("lvcreate", &["-an", "-Zn", "-Wn", "-L", "4M", "-n", "other", &vg]);
    lvm.run("lvextend", &["-L", "+8M", &format!("{vg}/data")]);
    let data = lvm.layout(&format!("{vg}/data"), &[0]);
    assert_eq!(data.segments.len(), 2, "data has two segments");
    let (offset, size, _) = mda_slot(&lvm);
    drop(lvm);
    let (image, _) = fill_lvs(&pv, dir, &[("data", &data, 72)]);
    let at = 4096 + offset as usize;
    let text = String::from_utf8(image[at..at + size as usize].to_vec()).unwrap();
    let text = text.trim_end_matches('\0');
    let second = "\"pv0\", 12";
    let first = "\"pv0\", 0";
    let counts = [first, second, "segment_count = 2"].map(|s| text.matches(s).count());
    assert_eq!(counts, [1, 1, 1], "{text}");
    for (from, to, lvm_says, reason) in [
        (second, "\"gone\", 12", "Couldn't find volume 'gone'", "neither a PV nor another LV"),
        (second, "\"data\", 12", "inconsistent LV area", "neither a PV nor another LV"),
        (second, "\"pv0\", 2", "PV segments corrupted", "mapped twice"),
        (first, "\"pv0\", 4", "PV segments corrupted", "mapped twice"),
        ("segment_count = 2", "segment_count = 1", "actual number of segments disagree", "2 segment sections"),
    ] {
        let mut mutated = image.clone();
        rewrite_committed_text(&mut mutated, offset, &text.replace(from, to));
        std::fs::write(&pv, &mutated).unwrap();
        let lvm = Lvm::whole(&pv);
        let refused = lvm.command("vgs").arg(&vg).output().unwrap();
        let says = String::from_utf8_lossy(&refused.stderr).into_owned();
        assert!(says.contains(lvm_says), "lvm refuses the text: {says}");
        drop(lvm);
        let (output, stderr) = stream_to_file(&["part"], &pv, &dir.join("out.img"));
        assert_same_bytes(&format!("PV with {to} copied raw"), &output, &mutated);
        assert!(stderr.contains("LVM2 PV") && stderr.contains(reason), "{stderr}");
    }
}
