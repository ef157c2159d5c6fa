#!/usr/bin/env python3
"""Seeds for fuzz_targets/btrfs.rs, in the sparse volume format of fuzz_targets/sparse.rs.

`python3 fuzz/make-btrfs-seeds.py` (needs mkfs.btrfs) makes small btrfs filesystems over zeros
with mkfs.btrfs --rootdir (a few files, one with a data extent), and the first device of a
RAID0/RAID1 pair, and writes fuzz/seeds/btrfs/*:
every non-zero run of bytes (the superblocks, tree blocks and file data; zero gaps shorter than
64 bytes are kept inside a run), plus a copy without its second half. Over zeros, the non-zero
bytes are exactly what mkfs wrote, so the seeds stay small.
"""
import pathlib, re, struct, subprocess, tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fuzz" / "seeds" / "btrfs"
SIZE = 127 << 20  # the multi-device minimum is 125 MiB; the target takes bit 15 of the size as a flag
# name: (mkfs options, devices); a seed holds the first device only.
VARIANTS = {
    "dup-16k": ([], 1),
    "single-4k": (["-m", "single", "-n", "4096"], 1),
    "raid0-dev1": (["-d", "raid0", "-m", "raid1", "-n", "4096"], 2),
}


def runs(img, longest=65535):
    """(offset, bytes) of the non-zero runs of img (zero gaps under 64 bytes kept inside a run),
    split to fit a chunk's u16 length."""
    out = []
    for run in re.finditer(rb"[^\0]+(?:\0{1,63}[^\0]+)*", img):
        for piece in range(run.start(), run.end(), longest):
            out.append((piece, img[piece:min(run.end(), piece + longest)]))
    return out


def seed(chunks):
    data = struct.pack(">H", SIZE // 4096)
    for offset, piece in chunks:
        data += struct.pack("<IH", offset, len(piece)) + piece
    return data


OUT.mkdir(parents=True, exist_ok=True)
with tempfile.TemporaryDirectory() as work:
    rootdir = pathlib.Path(work, "root")
    (rootdir / "dir").mkdir(parents=True)
    (rootdir / "small").write_bytes(b"inline file\n")
    (rootdir / "dir" / "extent").write_bytes(bytes(range(1, 256)) * 40)
    for name, (options, devices) in VARIANTS.items():
        images = [pathlib.Path(work, f"{name}-{i}.img") for i in range(devices)]
        for image in images:
            with open(image, "wb") as f:
                f.truncate(SIZE)
        # --rootdir takes one device only: the multi-device seed holds no files.
        files = ["--rootdir", str(rootdir)] if devices == 1 else []
        subprocess.run(["mkfs.btrfs", "-q", "-f", *files, *options, *map(str, images)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        chunks = runs(images[0].read_bytes())
        (OUT / name).write_bytes(seed(chunks))
        (OUT / (name + "-truncated")).write_bytes(seed(chunks[: len(chunks) // 2]))
        print(name, len(chunks), "chunks", len(seed(chunks)), "bytes")
