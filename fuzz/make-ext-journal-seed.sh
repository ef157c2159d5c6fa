#!/bin/bash
# Makes fuzz/seeds/ext/ext-journal-1k-40k: an 8 MiB ext4 (1 KiB blocks, a 1 MiB journal in three
# extents) with two committed, unreplayed transactions (a block bitmap copy, and a copy of a
# block starting with the JBD2 magic, which debugfs escapes), cut after the journal's log (the
# fuzz volume reads zeros after the input; its last two bytes say how many 4 KiB of them).
set -euo pipefail
out=$(cd "$(dirname "$0")" && pwd)/seeds/ext/ext-journal-1k-40k
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
truncate -s 8M "$work/s.img"
mkfs.ext4 -q -F -b 1024 -N 16 -J size=1 -O ^resize_inode "$work/s.img"
dd if="$work/s.img" of="$work/bitmap" bs=1024 skip=3 count=1 status=none
python3 - "$work" <<'PY'
import sys
work = sys.argv[1]
bitmap = bytearray(open(f"{work}/bitmap", "rb").read())
bitmap[200] |= 0xFF
open(f"{work}/bitmap", "wb").write(bitmap)
open(f"{work}/escaped", "wb").write(bytes([0xC0, 0x3B, 0x39, 0x98]) + bytes(1020))
PY
printf 'jo -c\njw -b 3 %s\njw -b 5000 %s\njc\n' "$work/bitmap" "$work/escaped" | debugfs -w -f - "$work/s.img" >/dev/null 2>&1
python3 - "$work/s.img" "$out" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()[:40960]
open(sys.argv[2], "wb").write(data + ((8 << 20) - len(data) >> 12).to_bytes(2, "big"))
PY
