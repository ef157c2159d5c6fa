#!/usr/bin/env python3
"""Seeds for fuzz_targets/ntfs.rs, in its sparse volume format, from the NTFS fixtures.

`python3 fuzz/make-ntfs-seeds.py` (needs zstd) writes fuzz/seeds/ntfs/*: for each fixture, the
metadata an analysis reads (boot sector, MFT records 0-3 and 5-7, the root directory's index blocks,
$Bitmap, the first bytes of the $LogFile blocks probed for restart pages, the records and first 4 KiB of pagefile.sys, swapfile.sys
and hiberfil.sys and their attribute-list extents) with every other byte left out (it reads as
zero), plus truncated and byte-flipped copies.
"""
import pathlib, random, struct, subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fuzz" / "seeds" / "ntfs"
THROWAWAY = {"pagefile.sys", "swapfile.sys", "hiberfil.sys"}


class Volume:
    def __init__(self, img):
        self.img = img
        u16 = lambda o: struct.unpack_from("<H", img, o)[0]
        spc = img[0x0D]
        self.cluster = (1 << (256 - spc) if spc > 128 else spc) * u16(0x0B)
        rs = struct.unpack_from("<b", img, 0x40)[0]
        self.record_size = rs * self.cluster if rs > 0 else 1 << -rs
        self.mft = struct.unpack_from("<Q", img, 0x30)[0] * self.cluster
        self.keep = [(0, 512)]

    def record(self, n):
        # Records of the first $MFT extent only: enough for the fixtures.
        off = self.mft + n * self.record_size
        rec = bytearray(self.img[off:off + self.record_size])
        usa, count = struct.unpack_from("<HH", rec, 4)
        for i in range(1, count):
            rec[i * 512 - 2:i * 512] = rec[usa + 2 * i:usa + 2 * i + 2]
        self.keep.append((off, self.record_size))
        return rec

    def attributes(self, rec):
        a = struct.unpack_from("<H", rec, 0x14)[0]
        while a + 8 <= len(rec) and struct.unpack_from("<I", rec, a)[0] != 0xFFFFFFFF:
            kind, length = struct.unpack_from("<II", rec, a)
            name_len, name_off = rec[a + 9], struct.unpack_from("<H", rec, a + 10)[0]
            name = rec[a + name_off:a + name_off + 2 * name_len].decode("utf-16-le")
            yield kind, name, rec[a:a + length]
            a += length

    def runs(self, attr):
        """(byte offset, length) of each allocated run of a non-resident attribute."""
        p = struct.unpack_from("<H", attr, 0x20)[0]
        lcn, out = 0, []
        while attr[p]:
            nl, no = attr[p] & 0xF, attr[p] >> 4
            length = int.from_bytes(attr[p + 1:p + 1 + nl], "little")
            if no:
                lcn += int.from_bytes(attr[p + 1 + nl:p + 1 + nl + no], "little", signed=True)
                out.append((lcn * self.cluster, length * self.cluster))
            p += 1 + nl + no
        return out

    def keep_data(self, rec, kind, name, limit):
        for k, n, attr in self.attributes(rec):
            if k == kind and n == name and attr[8]:
                left = limit
                for off, length in self.runs(attr):
                    self.keep.append((off, min(length, left)))
                    left -= min(length, left)

    def entries(self, node, start):
        entries_off, size = struct.unpack_from("<II", node, start)
        p = start + entries_off
        while p < start + size:
            length, key_len, flags = struct.unpack_from("<HHB", node, p + 8)
            if flags & 2 or length < 16:
                return
            name_len = node[p + 16 + 64]
            yield struct.unpack_from("<Q", node, p)[0] & 0xFFFFFFFFFFFF, node[p + 16 + 66:p + 16 + 66 + 2 * name_len].decode("utf-16-le")
            p += length

    def collect(self):
        for n in (0, 1, 3, 7):  # $MFT, $MFTMirr, $Volume, $Boot (2, 5, 6 below)
            self.record(n)
        self.keep_data(self.record(6), 0x80, "", 1 << 30)
        # $LogFile: the restart-page probes read 512-byte blocks at 0, 512, 1024, 2048, ...;
        # an emptied log (0xFF) is recognised from the first four bytes of each.
        for kind, name, attr in self.attributes(self.record(2)):
            if kind == 0x80 and attr[8]:
                start, length = self.runs(attr)[0]
                self.keep += [(start + p, 4) for p in [0] + [512 << k for k in range(9)] if p < length]
        root = self.record(5)
        found = []
        for kind, name, attr in self.attributes(root):
            if kind == 0x90 and name == "$I30":
                value = attr[struct.unpack_from("<H", attr, 0x14)[0]:]
                found += list(self.entries(value, 16))
            if kind == 0xA0 and name == "$I30":
                for off, length in self.runs(attr):
                    self.keep.append((off, length))
                    for block in range(off, off + length, 4096):
                        node = bytearray(self.img[block:block + 4096])
                        if node[:4] == b"INDX":
                            usa, count = struct.unpack_from("<HH", node, 4)
                            for i in range(1, count):
                                node[i * 512 - 2:i * 512] = node[usa + 2 * i:usa + 2 * i + 2]
                            found += list(self.entries(node, 24))
        for record, name in found:
            if name.lower() in THROWAWAY:
                rec = self.record(record)
                self.keep_data(rec, 0x80, "", 4096)
                for kind, _, attr in self.attributes(rec):
                    if kind == 0x20 and not attr[8]:
                        value = attr[struct.unpack_from("<H", attr, 0x14)[0]:]
                        p = 0
                        while p + 26 <= len(value) and struct.unpack_from("<H", value, p + 4)[0]:
                            self.record(struct.unpack_from("<Q", value, p + 16)[0] & 0xFFFFFFFFFFFF)
                            p += struct.unpack_from("<H", value, p + 4)[0]

    def encode(self):
        """The fuzz input: size, then chunks of non-zero bytes (zero runs of 16+ left out)."""
        covered = sorted(set((o, l) for o, l in self.keep if l > 0))
        out = bytearray(struct.pack(">H", min(len(self.img) // 4096, 0xFFFF)))
        for off, length in covered:
            data = self.img[off:off + length]
            i = 0
            while i < len(data):
                while i < len(data) and data[i] == 0:
                    i += 1
                j, zeros = i, 0
                while j < len(data) and zeros < 16 and j - i < 0xFFFF:
                    zeros = zeros + 1 if data[j] == 0 else 0
                    j += 1
                if j > i:
                    out += struct.pack("<IH", off + i, j - i) + data[i:j]
                i = j
        return bytes(out)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    for name in ("ntfs-c512", "ntfs-c4096", "ntfs-s4096", "ntfs-fragmented"):
        img = subprocess.run(["zstd", "-d", "-c", ROOT / "fixtures" / f"{name}.img.zst"], check=True, capture_output=True).stdout
        volume = Volume(img)
        volume.collect()
        seed = volume.encode()
        (OUT / name).write_bytes(seed)
        (OUT / f"{name}-truncated").write_bytes(seed[: len(seed) // 2])
        for k in range(1 if name == "ntfs-c4096" else 0):
            flipped = bytearray(seed)
            for _ in range(8):
                flipped[rng.randrange(2, len(flipped))] ^= 1 << rng.randrange(8)
            (OUT / f"{name}-flipped{k}").write_bytes(bytes(flipped))
    print("\n".join(f"{p.name}: {p.stat().st_size} bytes" for p in sorted(OUT.iterdir())))


main()
