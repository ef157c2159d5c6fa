#!/usr/bin/env bash
# The whole test suite, as the README gives it: `bash tests/run.sh`.
#
# The oracles are real tools (e2fsprogs, zerofree, ntfs-3g, dosfstools, exfatprogs, mtools,
# partclone, fdisk, borg, btrfs-progs). As root on Debian this installs the missing ones first; otherwise it
# says which are missing, and the tests that need them skip visibly (or fail when CI=true).
# Extra arguments go to `cargo test` (e.g. `bash tests/run.sh ext`).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(borgbackup e2fsprogs zerofree ntfs-3g dosfstools exfatprogs exfat-fuse mtools partclone fdisk zstd util-linux btrfs-progs)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "tests: installing ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "tests: missing packages: ${missing[*]} (run as root to install them)" >&2
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
