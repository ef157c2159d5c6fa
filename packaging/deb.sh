#!/usr/bin/env bash
# Builds target/debian/imgstream_VERSION_ARCH.deb: the release binary, one man page per
# subcommand and the bash, zsh and fish completions, all generated from the binary itself.
# Needs only cargo and dpkg-deb (Debian's dpkg). Usage: bash packaging/deb.sh
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --quiet
binary=target/release/imgstream
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
arch=$(dpkg --print-architecture)
root=target/debian/root
rm -rf "$root"
# Stripped: the release profile keeps line tables for backtraces, which users do not need.
install -D -s -m 0755 "$binary" "$root/usr/bin/imgstream"
"$binary" man "$root/usr/share/man/man1"
gzip -9n "$root"/usr/share/man/man1/*.1
install -d "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
    "$root/usr/share/fish/vendor_completions.d" "$root/usr/share/doc/imgstream"
"$binary" completions bash > "$root/usr/share/bash-completion/completions/imgstream"
"$binary" completions zsh > "$root/usr/share/zsh/vendor-completions/_imgstream"
"$binary" completions fish > "$root/usr/share/fish/vendor_completions.d/imgstream.fish"
install -m 0644 README.md "$root/usr/share/doc/imgstream/README.md"
install -m 0644 LICENSE "$root/usr/share/doc/imgstream/copyright"

install -d "$root/DEBIAN"
cat > "$root/DEBIAN/control" <<CONTROL
Package: imgstream
Version: $version
Architecture: $arch
Maintainer: imgstream developers <imgstream@localhost>
Depends: libc6
Recommends: borgbackup
Suggests: e2fsprogs, ntfs-3g, xfsprogs, btrfs-progs
Section: admin
Priority: optional
Installed-Size: $(du -sk "$root/usr" | cut -f1)
Description: stream disks and partitions as raw images with free space zeroed
 imgstream reads a disk or partition read-only and writes a raw image of exactly its size,
 in which every block the filesystem proves free is emitted as zeros without being read.
 Piped into borg, free space costs nothing and old data no longer spoils deduplication.
CONTROL
deb="target/debian/imgstream_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
