#!/usr/bin/env bash
# Side-by-side benchmark of imgstream and its peers, in one run, on the same images:
#
#   benches/peers.sh [ext4] [ntfs] [xfs] [btrfs] [restore] [backup]   (default: ext4 ntfs; root, to drop the page cache)
#
# For each filesystem it builds a SIZE image (default 4G, env SIZE) filled with random garbage,
# formats it, fills FILL% (default "30 90", env FILL) with random files, then times, with the
# page cache dropped before every run:
#   to /dev/null:  cat IMG | imgstream part IMG | the peers (zerofree on a copy + cat; ntfsclone;
#                  partclone.xfs; partclone.btrfs), and for btrfs the warm analysis alone (imgstream info)
#   into a pipe:   imgstream part of an empty filesystem | dd of=/dev/null bs=1M (zeros rate)
#   into borg:     the same producers piped into borg create --chunker-params fixed,4194304 -
#                  (and borg's default chunker for NTFS), with the deduplicated repository size.
# backup: imgstream backup-disk (FUSE view + borg create --sparse, and --no-fuse's tar stream)
# against borg --sparse on two sparse files of the same elided image (the ideal: borg reads only
# data): one with every zero block a hole (`imgstream disk > FILE`), one whose holes are exactly
# the elided ranges (what the view shows); and ntfsclone -s | borg; cold and warm, with
# imgstream's own CPU time (the FUSE server). DISK_SIZE (default 16G) and NTFS_SIZE (default 4G)
# set the images' sizes.
# REPEAT=N runs every row N times and reports the median (default 1). borg repositories live
# in /dev/shm when it has room (REPOS_ON_DISK=1: under WORK).
# Prints tables of times, rates and speed ratios to each table's first row. Everything lives
# under WORK (default a new dir in /var/tmp) and is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=${SIZE:-4G}
FILL=${FILL:-"30 90"}
filesystems=("$@")
[ ${#filesystems[@]} -gt 0 ] || filesystems=(ext4 ntfs)

WORK=$(mktemp -d "${WORK_PARENT:-/var/tmp}/imgstream-peers.XXXXXX")
# borg repositories go to RAM (/dev/shm) when it has 4 GiB free: on the images' own disk,
# borg's writes and their writeback would compete with the reads being compared, run to run.
REPOS=$WORK
if [ -z "${REPOS_ON_DISK:-}" ] && [ "$(df --output=avail -B1G /dev/shm 2>/dev/null | tail -1)" -ge 4 ] 2>/dev/null; then
    REPOS=$(mktemp -d /dev/shm/imgstream-peers-repos.XXXXXX)
fi
cleanup() {
    mountpoint -q "$WORK/mnt" 2>/dev/null && umount "$WORK/mnt"
    for loop in $(losetup -n -O NAME -j "$WORK/disk.img" 2>/dev/null); do losetup -d "$loop"; done
    rm -rf "$WORK" "$REPOS"
}
trap cleanup EXIT

export BORG_PASSPHRASE="" BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_BASE_DIR="$WORK/borg-home"

cargo build --release --quiet
IMGSTREAM=$PWD/target/release/imgstream

drop_caches() {
    sync
    if [ -w /proc/sys/vm/drop_caches ]; then echo 3 > /proc/sys/vm/drop_caches
    else echo "peers: not root: page cache NOT dropped, disk read times are meaningless" >&2; fi
}

# run_once COMMAND [SETUP]: SETUP (untimed, e.g. a fresh repository), a sync (no earlier run's
# writeback lands in this one) and, unless WARM, dropping the page cache; then COMMAND (a bash
# string, its output on stderr), timed: prints its seconds.
run_once() {
    local start end
    [ -z "${2:-}" ] || bash -c "$2"
    if [ -n "${WARM:-}" ]; then sync; else drop_caches; fi
    start=$(date +%s.%N)
    bash -o pipefail -c "$1" >&2
    end=$(date +%s.%N)
    echo "$end - $start" | bc -l
}

# median SECONDS...: the middle value (the upper one of an even count).
median() { printf '%s\n' "$@" | sort -g | sed -n "$(( $# / 2 + 1 ))p"; }

# timed LABEL COMMAND [SETUP]: runs COMMAND REPEAT times (default 1) with run_once; records
# the median seconds.
declare -a LABELS=() SECONDS_TAKEN=() EXTRA=()
timed() {
    local label=$1 command=$2 setup=${3:-} runs=() run
    for ((run = 0; run < ${REPEAT:-1}; run++)); do
        runs+=("$(run_once "$command" "$setup")")
    done
    LABELS+=("$label")
    SECONDS_TAKEN+=("$(median "${runs[@]}")")
    EXTRA+=("")
}

# warm_up FILE...: reads the data of each file into the page cache (a sparse file's holes
# are skipped: reading 16 GiB of them would take longer than the runs timed).
warm_up() {
    python3 -c '
import os, sys
for path in sys.argv[1:]:
    fd, offset = os.open(path, os.O_RDONLY), 0
    while True:
        try:
            offset = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError:
            break
        end = os.lseek(fd, offset, os.SEEK_HOLE)
        while offset < end:
            offset += len(os.pread(fd, min(end - offset, 1 << 24), offset))
    os.close(fd)
' "$@"
}
export -f warm_up

# fresh_repo REPO: the setup that gives each timed run an empty repository.
fresh_repo() { echo "rm -rf '$1' && borg init -e none '$1' >/dev/null 2>&1"; }

# borg_size REPO: deduplicated (unique, compressed) bytes stored in REPO.
borg_size() { borg info --json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["cache"]["stats"]["unique_csize"])'; }

# borg_row LABEL PRODUCER [CHUNKER]: producer | borg create into a fresh repo; records time and size.
borg_row() {
    local label=$1 producer=$2 chunker=${3:-fixed,4194304} repo
    repo="$REPOS/repo-$RANDOM"
    timed "$label" "$producer | borg create --chunker-params $chunker $repo::a -" "$(fresh_repo "$repo")"
    EXTRA[-1]="$(numfmt --to=iec "$(borg_size "$repo")") in repo"
    rm -rf "$repo"
}

print_table() {
    local title=$1 baseline=${SECONDS_TAKEN[0]} bytes=$2 i
    echo
    echo "### $title"
    echo
    printf '| %-72s | %8s | %10s | %9s | %s |\n' "run" "seconds" "MB/s" "speed vs row 1" "notes"
    printf '|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..74})" "----------" "------------" "-----------" "------"
    for i in "${!LABELS[@]}"; do
        printf '| %-72s | %8.2f | %10.0f | %8.2fx | %s |\n' "${LABELS[$i]}" "${SECONDS_TAKEN[$i]}" \
            "$(echo "$bytes / ${SECONDS_TAKEN[$i]} / 1000000" | bc -l)" \
            "$(echo "$baseline / ${SECONDS_TAKEN[$i]}" | bc -l)" "${EXTRA[$i]}"
    done
    LABELS=(); SECONDS_TAKEN=(); EXTRA=()
}

# fill_files DIR BYTES: random files of 1-64 MiB totalling BYTES.
fill_files() {
    local dir=$1 remaining=$2 n=0 size
    mkdir -p "$dir"
    while [ "$remaining" -gt 0 ]; do
        size=$(( (RANDOM % 64 + 1) << 20 )); [ "$size" -le "$remaining" ] || size=$remaining
        head -c "$size" /dev/urandom > "$dir/file$n"
        remaining=$((remaining - size)); n=$((n + 1))
    done
}

# garbage_image PATH: SIZE bytes of random data, so free space is not holes (holes read free).
garbage_image() { head -c "$SIZE" /dev/urandom > "$1"; }

bench_ext4() {
    local fill=$1 img="$WORK/ext4.img" bytes used_kb
    garbage_image "$img"
    bytes=$(stat -c %s "$img")
    fill_files "$WORK/files" $(( bytes * fill / 100 ))
    mkfs.ext4 -q -F -E nodiscard -d "$WORK/files" "$img"
    rm -rf "$WORK/files"
    used_kb=$("$IMGSTREAM" info --json "$img" | python3 -c 'import json,sys; v=json.load(sys.stdin)["volume"]; print(round(100*v["used"]/v["size"]))')
    timed "cat IMG > /dev/null" "cat '$img' > /dev/null"
    timed "imgstream part IMG > /dev/null" "'$IMGSTREAM' part '$img' > /dev/null 2>/dev/null"
    timed "cp IMG copy && zerofree copy && cat copy > /dev/null" \
        "cp '$img' '$WORK/copy' && zerofree '$WORK/copy' && cat '$WORK/copy' > /dev/null; rm -f '$WORK/copy'"
    print_table "ext4, $SIZE image, ${used_kb}% used (imgstream info): to /dev/null" "$bytes"
    borg_row "cat IMG | borg create (fixed 4 MiB)" "cat '$img'"
    borg_row "imgstream part IMG | borg create (fixed 4 MiB)" "'$IMGSTREAM' part '$img' 2>/dev/null"
    borg_row "cp+zerofree copy, cat copy | borg create (fixed 4 MiB)" \
        "cp '$img' '$WORK/copy' && zerofree '$WORK/copy' && cat '$WORK/copy'"
    rm -f "$WORK/copy"
    print_table "ext4, $SIZE image, ${used_kb}% used: into borg" "$bytes"
    rm -f "$img"
}

bench_zeros_into_pipe() {
    local img="$WORK/empty.img" bytes
    truncate -s "$SIZE" "$img"
    mkfs.ext4 -q -F "$img"
    bytes=$(stat -c %s "$img")
    timed "cat IMG > /dev/null (sparse, nearly all holes)" "cat '$img' > /dev/null"
    timed "imgstream part EMPTY | dd of=/dev/null bs=1M" "'$IMGSTREAM' part '$img' 2>/dev/null | dd of=/dev/null bs=1M status=none"
    print_table "zeros into a pipe: empty ext4, $SIZE" "$bytes"
    rm -f "$img"
}

bench_ntfs() {
    local fill=$1 img="$WORK/ntfs.img" bytes used
    garbage_image "$img"
    bytes=$(stat -c %s "$img")
    # mkntfs warns about the geometry of an image file; show its output only if it fails.
    mkntfs -q -F -f "$img" > "$WORK/mkntfs.log" 2>&1 || { cat "$WORK/mkntfs.log" >&2; exit 1; }
    mkdir -p "$WORK/mnt"
    ntfs-3g "$img" "$WORK/mnt"
    fill_files "$WORK/mnt/files" $(( bytes * fill / 100 ))
    umount "$WORK/mnt"
    used=$("$IMGSTREAM" info --json "$img" | python3 -c 'import json,sys; v=json.load(sys.stdin)["volume"]; print(round(100*v["used"]/v["size"]))')
    timed "cat IMG > /dev/null" "cat '$img' > /dev/null"
    timed "imgstream part IMG > /dev/null" "'$IMGSTREAM' part '$img' > /dev/null 2>/dev/null"
    timed "ntfsclone -o - IMG > /dev/null" "ntfsclone -f -o - '$img' > /dev/null 2>/dev/null"
    timed "ntfsclone -s -o - IMG > /dev/null" "ntfsclone -f -s -o - '$img' > /dev/null 2>/dev/null"
    timed "partclone.ntfs -c -s IMG -o - > /dev/null" "partclone.ntfs -q -c -s '$img' -o - > /dev/null 2>/dev/null"
    print_table "NTFS, $SIZE image, ${used}% used (imgstream info): to /dev/null" "$bytes"
    for chunker in fixed,4194304 buzhash,19,23,21,4095; do
        borg_row "cat IMG | borg (${chunker%%,*})" "cat '$img'" "$chunker"
        local name=${chunker%%,*}
        borg_row "imgstream part IMG | borg ($name)" "'$IMGSTREAM' part '$img' 2>/dev/null" "$chunker"
        borg_row "ntfsclone -o - IMG | borg ($name)" "ntfsclone -f -o - '$img' 2>/dev/null" "$chunker"
        borg_row "ntfsclone -s -o - IMG | borg ($name)" "ntfsclone -f -s -o - '$img' 2>/dev/null" "$chunker"
        borg_row "partclone.ntfs -c -s IMG -o - | borg ($name)" "partclone.ntfs -q -c -s '$img' -o - 2>/dev/null" "$chunker"
    done
    print_table "NTFS, $SIZE image, ${used}% used: into borg (ratios to the first row)" "$bytes"
    rm -f "$img"
}

# bench_xfs FILL: XFS aged by 20000 small files in 8 directories of which every other one is
# deleted (fragmented free space, multi-level free-space B+trees), then FILL% of big files.
# Also times the analysis alone (`imgstream info`, warm: the second of two runs) and compares the
# bytes imgstream copies with the size of partclone's image.
bench_xfs() {
    local fill=$1 img="$WORK/xfs.img" bytes used levels
    garbage_image "$img"
    bytes=$(stat -c %s "$img")
    mkfs.xfs -q -f "$img"
    mkdir -p "$WORK/mnt"
    mount -o loop "$img" "$WORK/mnt"
    python3 - "$WORK/mnt" <<'PY'
import os, sys
root = sys.argv[1]
for i in range(20000):
    os.makedirs(f"{root}/small{i % 8}", exist_ok=True)
    with open(f"{root}/small{i % 8}/f{i}", "wb") as out:
        out.write(os.urandom(1 + (i * 7919) % 16384))
os.sync()
for i in range(20000):
    if (i // 8) % 2 == 0:  # every other file of each directory
        os.remove(f"{root}/small{i % 8}/f{i}")
PY
    fill_files "$WORK/mnt/files" $(( bytes * fill / 100 ))
    umount "$WORK/mnt"
    levels=$(for ag in $(seq 0 $(( $(xfs_db -r -c 'sb 0' -c 'p agcount' "$img" | awk '{print $3}') - 1 ))); do
        xfs_db -r -c "agf $ag" -c 'p bnolevel' "$img" | awk '{print $3}'; done | sort -n | tail -1)
    used=$("$IMGSTREAM" info --json "$img" | python3 -c 'import json,sys; v=json.load(sys.stdin)["volume"]; print(v["used"])')
    "$IMGSTREAM" info "$img" > /dev/null
    local start end
    start=$(date +%s.%N); "$IMGSTREAM" info "$img" > /dev/null; end=$(date +%s.%N)
    partclone.xfs -q -c -s "$img" -o "$WORK/partclone.img" 2>/dev/null
    echo
    echo "XFS, $SIZE, ${fill}% of big files after 20000 small ones, half deleted: deepest free-space"
    echo "B+tree $levels levels; imgstream info (warm) $(echo "$end - $start" | bc -l | cut -c1-5) s;"
    echo "imgstream copies $(numfmt --to=iec "$used") ($used bytes), partclone's image is" \
        "$(numfmt --to=iec "$(stat -c %s "$WORK/partclone.img")") ($(stat -c %s "$WORK/partclone.img") bytes)"
    rm -f "$WORK/partclone.img"
    timed "cat IMG > /dev/null" "cat '$img' > /dev/null"
    timed "imgstream part IMG > /dev/null" "'$IMGSTREAM' part '$img' > /dev/null 2>/dev/null"
    timed "partclone.xfs -c -s IMG -o - > /dev/null" "partclone.xfs -q -c -s '$img' -o - > /dev/null 2>/dev/null"
    print_table "XFS, $SIZE image, $(( 100 * used / bytes ))% used (imgstream info): to /dev/null" "$bytes"
    borg_row "cat IMG | borg create (fixed 4 MiB)" "cat '$img'"
    borg_row "imgstream part IMG | borg create (fixed 4 MiB)" "'$IMGSTREAM' part '$img' 2>/dev/null"
    borg_row "partclone.xfs -c -s IMG -o - | borg create (fixed 4 MiB)" "partclone.xfs -q -c -s '$img' -o - 2>/dev/null"
    print_table "XFS, $SIZE image, $(( 100 * used / bytes ))% used: into borg" "$bytes"
    rm -f "$img"
}

# bench_btrfs FILL: mkfs.btrfs over garbage, FILL% (at most 80%: DUP metadata and the global
# reserve take the rest) written through a loop mount, then every third file deleted (aged: free
# space inside the data block groups, not only unallocated).
bench_btrfs() {
    local fill=$(( $1 > 80 ? 80 : $1 )) img="$WORK/btrfs.img" bytes used start end
    garbage_image "$img"
    bytes=$(stat -c %s "$img")
    mkfs.btrfs -q -f "$img" >/dev/null 2>&1
    mkdir -p "$WORK/mnt"
    mount -o loop "$img" "$WORK/mnt"
    fill_files "$WORK/mnt/files" $(( bytes * fill / 100 ))
    rm -f "$WORK"/mnt/files/file*[036]
    umount "$WORK/mnt"
    used=$("$IMGSTREAM" info --json "$img" | python3 -c 'import json,sys; v=json.load(sys.stdin)["volume"]; print(round(100*v["used"]/v["size"]))')
    start=$(date +%s.%N)
    "$IMGSTREAM" info "$img" > /dev/null
    end=$(date +%s.%N)
    printf '\nbtrfs, %s, %s%% used: analysis alone (imgstream info, page cache warm): %.3f s\n' "$SIZE" "$used" "$(echo "$end - $start" | bc -l)"
    timed "cat IMG > /dev/null" "cat '$img' > /dev/null"
    timed "imgstream part IMG > /dev/null" "'$IMGSTREAM' part '$img' > /dev/null 2>/dev/null"
    timed "partclone.btrfs -c -s IMG -o - > /dev/null" "partclone.btrfs -q -c -s '$img' -o - > /dev/null 2>/dev/null"
    print_table "btrfs, $SIZE image, ${used}% used (imgstream info): to /dev/null" "$bytes"
    rm -f "$img"
}

# bench_restore FILL: the way back: borg extract --stdout alone (the baseline), into cat (the
# cost of the pipe itself), into imgstream restore --sparse (holes for zeros), and into dd of a
# file (every zero written).
bench_restore() {
    local fill=$1 img="$WORK/restore.img" bytes repo="$WORK/repo-restore"
    truncate -s "$SIZE" "$img"
    bytes=$(stat -c %s "$img")
    fill_files "$WORK/files" $(( bytes * fill / 100 ))
    mkfs.ext4 -q -F -d "$WORK/files" "$img"
    rm -rf "$WORK/files"
    borg init -e none "$repo"
    "$IMGSTREAM" part "$img" 2>/dev/null | borg create --chunker-params fixed,4194304 "$repo::a" -
    timed "borg extract --stdout > /dev/null" "borg extract --stdout '$repo::a' > /dev/null"
    # The cheapest consumer of a pipe: what borg itself can deliver through one.
    timed "borg extract --stdout | cat > /dev/null" "borg extract --stdout '$repo::a' | cat > /dev/null"
    timed "borg extract --stdout | imgstream restore --sparse FILE" \
        "rm -f '$WORK/out'; borg extract --stdout '$repo::a' | '$IMGSTREAM' restore --sparse '$WORK/out' 2>/dev/null"
    # imgstream restore fsyncs at the end, so dd does too (without it dd only fills the page cache).
    timed "borg extract --stdout | dd of=FILE bs=4M conv=fsync" \
        "rm -f '$WORK/out'; borg extract --stdout '$repo::a' | dd of='$WORK/out' bs=4M conv=fsync status=none"
    print_table "restore from borg: ext4, $SIZE, ${fill}% filled (speed vs borg extract alone)" "$bytes"
    rm -rf "$repo" "$img" "$WORK/out"
}

# aged_gpt_disk PATH: a DISK_SIZE GPT disk (512 MiB ESP, ext4 and NTFS halves of the rest),
# each filesystem filled with random files of which half are deleted again (stale data in free
# space), ending about 5% used. Each partition gets its own loop device (offset and size from
# sfdisk: partition device nodes need udev).
aged_gpt_disk() {
    local disk=$1 loop part start size mkfs
    truncate -s "${DISK_SIZE:-16G}" "$disk"
    printf 'label: gpt\nsize=512MiB, type=uefi\nsize=%dMiB, type=linux\ntype=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n' \
        $(( ($(stat -c %s "$disk") >> 20) / 2 - 258 )) | sfdisk -q "$disk"
    mkdir -p "$WORK/mnt"
    for part in 1 2 3; do
        read -r start size < <(sfdisk --json "$disk" | python3 -c "import json,sys; p=json.load(sys.stdin)['partitiontable']['partitions'][$part-1]; print(p['start']*512, p['size']*512)")
        loop=$(losetup --show -f -o "$start" --sizelimit "$size" "$disk")
        case $part in
            # FAT through mtools: the kernel may lack vfat.
            1) mkfs.vfat -F 32 "$loop" >/dev/null
               fill_files "$WORK/files" $(( size / 10 ))
               mcopy -s -i "$loop" "$WORK/files" ::/
               for n in 1 3 5 7 9; do mdel -i "$loop" "::/files/file*$n" 2>/dev/null || true; done
               rm -rf "$WORK/files" ;;
            2) mkfs.ext4 -q -F -E nodiscard "$loop"; mount "$loop" "$WORK/mnt" ;;
            3) mkntfs -q -F -f "$loop" > "$WORK/mkntfs.log" 2>&1 || { cat "$WORK/mkntfs.log" >&2; losetup -d "$loop"; exit 1; }
               ntfs-3g "$loop" "$WORK/mnt" ;;
        esac
        if [ "$part" != 1 ]; then
            fill_files "$WORK/mnt/files" $(( size / 10 ))
            sync
            rm -f "$WORK"/mnt/files/file*[13579]
            umount "$WORK/mnt"
        fi
        losetup -d "$loop"
    done
}

# cpu_of LOG: imgstream's own CPU time (its summary line), for the FUSE server's cost.
cpu_of() { sed -n 's/.*imgstream CPU \([0-9.]*\) s.*/\1 s imgstream CPU/p' "$1" | tail -1; }

# map_sparse IMG OUT: a sparse file of IMG's elided image whose holes are exactly the ranges
# `imgstream map` calls zero (used blocks that hold zeros stay data, as the FUSE view shows them).
map_sparse() {
    "$IMGSTREAM" map "$1" | python3 -c '
import os, sys
src, out = os.open(sys.argv[1], os.O_RDONLY), os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
for line in sys.stdin:
    start, length, kind = line.split()
    start, length = int(start), int(length)
    if kind == "data":
        done = 0
        while done < length:
            n = os.copy_file_range(src, out, min(length - done, 1 << 30), start + done, start + done)
            if n <= 0: raise SystemExit(f"copy of {sys.argv[1]} at byte {start + done} failed")
            done += n
    os.ftruncate(out, start + length)
' "$1" "$2"
}

# backup_rows IMG WARMTH [LABEL COMMAND]: the backup rows for one image, cold (page cache
# dropped) or warm, after an optional first row of the caller's (@REPO@: its repository). The
# rows take turns, REPEAT rounds, so that a drift in the machine's speed touches every row alike.
backup_rows() {
    local img=$1 warm=$2 sparse="$WORK/elided.img" mapped="$WORK/mapped.img" warmup="" round i repo
    local -a labels=() commands=() times=()
    [ $# -lt 4 ] || { labels+=("$3"); commands+=("$4"); }
    labels+=("borg --sparse on the elided image, every zero block a hole"
        "borg --sparse on the elided image, holes where imgstream map says zero"
        "imgstream backup-disk IMG (FUSE view, borg --sparse)"
        "imgstream backup-disk --no-fuse IMG (tar, borg import-tar)"
        "imgstream disk IMG | borg create (fixed 4 MiB)")
    commands+=("borg create --read-special --sparse --chunker-params fixed,4194304 @REPO@::a '$sparse'"
        "borg create --read-special --sparse --chunker-params fixed,4194304 @REPO@::a '$mapped'"
        "'$IMGSTREAM' backup-disk --repo @REPO@ --name a '$img' 2> '$WORK/log-fuse'"
        "'$IMGSTREAM' backup-disk --no-fuse --repo @REPO@ --name a '$img' 2> '$WORK/log-tar'"
        "'$IMGSTREAM' disk '$img' 2>/dev/null | borg create --chunker-params fixed,4194304 @REPO@::a -")
    "$IMGSTREAM" disk "$img" > "$sparse" 2>/dev/null
    map_sparse "$img" "$mapped"
    # Warm: the image and the sparse files in the page cache before every run (imgstream drops
    # the source pages it has read), nothing dropped.
    if [ "$warm" = warm ]; then warmup="warm_up '$img' '$sparse' '$mapped'; "; WARM=1; else WARM=; fi
    for ((round = 0; round < ${REPEAT:-1}; round++)); do
        for i in "${!commands[@]}"; do
            repo="$REPOS/repo-$i"
            times[i]+="$(run_once "${commands[i]//@REPO@/$repo}" "$warmup$(fresh_repo "$repo")") "
        done
    done
    for i in "${!commands[@]}"; do
        LABELS+=("${labels[i]}")
        # shellcheck disable=SC2086 # the times are words
        SECONDS_TAKEN+=("$(median ${times[i]})")
        EXTRA+=("$(numfmt --to=iec "$(borg_size "$REPOS/repo-$i")") in repo")
        rm -rf "$REPOS/repo-$i"
    done
    EXTRA[-3]="$(cpu_of "$WORK/log-fuse"); ${EXTRA[-3]}"
    EXTRA[-2]="$(cpu_of "$WORK/log-tar"); ${EXTRA[-2]}"
    WARM=
    rm -f "$sparse" "$mapped"
}

bench_backup() {
    local disk="$WORK/disk.img" ntfs="$WORK/ntfs.img" bytes used
    aged_gpt_disk "$disk"
    bytes=$(stat -c %s "$disk")
    used=$("$IMGSTREAM" info --json "$disk" | python3 -c 'import json,sys; t=json.load(sys.stdin)["total"]; print(round(100*t["used"]/t["size"]))')
    for warmth in cold warm; do
        backup_rows "$disk" "$warmth"
        print_table "backup-disk: ${DISK_SIZE:-16G} GPT disk (ESP + ext4 + NTFS, aged), ${used}% used, $warmth cache" "$bytes"
    done
    rm -f "$disk"
    SIZE=${NTFS_SIZE:-4G} garbage_image "$ntfs"
    mkntfs -q -F -f "$ntfs" > "$WORK/mkntfs.log" 2>&1 || { cat "$WORK/mkntfs.log" >&2; exit 1; }
    mkdir -p "$WORK/mnt"; ntfs-3g "$ntfs" "$WORK/mnt"
    fill_files "$WORK/mnt/files" $(( $(stat -c %s "$ntfs") * 30 / 100 ))
    umount "$WORK/mnt"
    bytes=$(stat -c %s "$ntfs")
    used=$("$IMGSTREAM" info --json "$ntfs" | python3 -c 'import json,sys; v=json.load(sys.stdin)["volume"]; print(round(100*v["used"]/v["size"]))')
    for warmth in cold warm; do
        backup_rows "$ntfs" "$warmth" "ntfsclone -s -o - IMG | borg create (fixed 4 MiB)" \
            "ntfsclone -f -s -o - '$ntfs' 2>/dev/null | borg create --chunker-params fixed,4194304 @REPO@::a -"
        print_table "backup-disk: ${NTFS_SIZE:-4G} NTFS image, ${used}% used, $warmth cache" "$bytes"
    done
    rm -f "$ntfs"
}

for fs in "${filesystems[@]}"; do
    case $fs in
        ext4) for fill in $FILL; do bench_ext4 "$fill"; done; bench_zeros_into_pipe ;;
        ntfs) for fill in $FILL; do bench_ntfs "$fill"; done ;;
        xfs) for fill in $FILL; do bench_xfs "$fill"; done ;;
        btrfs) for fill in $FILL; do bench_btrfs "$fill"; done ;;
        restore) for fill in $FILL; do bench_restore "$fill"; done ;;
        backup) bench_backup ;;
        *) echo "peers: unknown filesystem $fs (ext4, ntfs, xfs, btrfs, restore, backup)" >&2; exit 2 ;;
    esac
done
