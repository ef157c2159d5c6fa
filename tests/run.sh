#!/usr/bin/env bash
# The whole test suite, as the README gives it: `bash tests/run.sh`.
#
# The oracles are real tools (e2fsprogs, zerofree, ntfs-3g, dosfstools, exfatprogs, mtools,
# xfsprogs, partclone, fdisk, borg, btrfs-progs). As root on Debian this installs the missing
# ones first; otherwise it says which are missing, and the tests that need them skip visibly (or
# fail when CI=true).
# Extra arguments go to `cargo test` (e.g. `bash tests/run.sh ext`).
set -euo pipefail
cd "$(dirname "$0")/.."

# Each package, and what needs it.
declare -A why=(
    [borgbackup]="backup-disk, restore-disk and the borg round trips"
    [e2fsprogs]="mkfs.ext4, e2fsck, dumpe2fs, debugfs: the ext oracles"
    [zerofree]="the ext peer, run on copies"
    [ntfs-3g]="mkntfs, ntfsclone, ntfscat, ntfsinfo: the NTFS oracles"
    [dosfstools]="mkfs.fat, fsck.fat"
    [exfatprogs]="mkfs.exfat, fsck.exfat"
    [exfat-fuse]="mounting exFAT read-only to compare files"
    [mtools]="writing files into FAT images without a mount"
    [partclone]="the partclone peers' block maps"
    [fdisk]="sfdisk: partition tables for the disk tests"
    [zstd]="unpacking fixtures/"
    [util-linux]="losetup, mount"
    [util-linux-extra]="fincore: the page cache a run leaves (fault tests)"
    [nbdkit]="a source with unreadable sectors: the ddrescue filter (fault tests)"
    [libnbd-bin]="nbdfuse: that source as a file (fault tests)"
    [fuse3]="fusermount3 for nbdfuse (fault tests)"
    [gddrescue]="ddrescuelog: judges --rescue's map (fault tests)"
    [man-db]="rendering the generated man pages (package test)"
    [python3-jsonschema]="validating info --json against docs/info-schema.json"
    [xfsprogs]="mkfs.xfs, xfs_db, xfs_repair, xfs_logprint: the XFS oracles; XFS mounted through stacked loop devices (policy tests); a reflink scratch XFS for crash-consistent copies of a live ext4 (journal tests)"
    [btrfs-progs]="mkfs.btrfs, btrfs check, dump-tree: the btrfs oracles"
    [f2fs-tools]="mkfs.f2fs: F2FS named (policy tests)"
    [qemu-utils]="qemu-img: qcow2, VMDK, VHDX and VHD containers named (policy tests)"
    [cryptsetup-bin]="cryptsetup luksFormat: LUKS1 and LUKS2 named (policy tests)"
    [mdadm]="mdadm --examine (and -X): checks the md superblocks the policy and md tests write"
    [lvm2]="pvcreate, vgcreate, lvcreate, vgcfgrestore, pvck, vgcfgbackup: LVM2 test disks and oracles (lvm, policy tests)"
    [bcache-tools]="make-bcache: bcache named (policy tests)"
    [apfsprogs]="mkapfs: APFS named (policy tests)"
)
packages=("${!why[@]}")
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "tests: these oracle tools are missing:" >&2
    for package in "${missing[@]}"; do echo "  $package: ${why[$package]}" >&2; done
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "tests: installing them with apt-get (waiting up to 10 minutes for the dpkg lock)" >&2
        apt-get -o DPkg::Lock::Timeout=600 update -qq
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >/dev/null
    else
        echo "tests: run as root to install them; the tests that need them skip (and fail under CI=true)" >&2
    fi
fi

# One closing line for the whole run: cargo prints a result per test binary, the last ones
# being the (empty) doc tests.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace "$@" 2>&1 | tee "$log"
# A test whose oracle tool is missing passes after printing "SKIPPED: ..." (under CI=true it
# fails instead), so those are counted from the log, not from cargo's results.
skipped=$(grep -c '^SKIPPED: ' "$log" || true)
[ "$skipped" -eq 0 ] || echo "tests: $skipped checks skipped (SKIPPED lines above); CI=true makes them fail" >&2
awk '/^test result:/ { passed += $4; failed += $6 }
     END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"
