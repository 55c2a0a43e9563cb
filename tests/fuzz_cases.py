"""Seeded fuzz inputs for normalise_image and the drop folder: small valid PNG and JPEG files of
garments, one per encoder feature PIL has a separate code path for (EXIF, ICC profile, progressive,
palette, transparency, 16 bits, interlacing, several pictures...), damaged by seeded byte mutations.

Case `index` of fuzz seed `seed` depends on nothing else (`fuzz_case(seed, index)`), so a failing case
named in a report is reproduced alone, without replaying the cases before it.
"""

from __future__ import annotations

import functools
import struct
import zlib
from typing import Callable, Iterator, NamedTuple

import numpy as np
from PIL import Image, ImageCms, ImageOps

from tests.corpus import (EXIF_ORIENTATION, ROTATE_90_CW_ON_DISPLAY, cmyk_jpeg, encode, garment, png_chunk,
                          sixteen_bit_png)

HEADER_BYTES = 600  # headers, EXIF and ICC segments of the seed files start within this many bytes
HEADER_BIAS = 0.75  # share of byte positions drawn from the header region
MAX_MUTATIONS_PER_CASE = 3
PNG_CRC_FIX_SHARE = 0.5  # damaged PNGs whose chunk CRCs are then made right again
LARGE_VALUES = (0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0x00FFFFFF, 0x00010000)
EXIF_IFD, GPS_IFD = 0x8769, 0x8825
JPEG_FRAME_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
ADAM7 = ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1))


class FuzzCase(NamedTuple):
    name: str  # "<kind>-<index>-<mutations>", also usable as a file name
    kind: str  # the seed file it was mutated from
    data: bytes

    @property
    def suffix(self) -> str:
        return ".png" if self.kind.startswith("png") else ".jpg"


# ------------------------------------------------------------------------------------------ seed files


def coloured_garment(width: int, height: int, variant: int) -> Image.Image:
    return ImageOps.colorize(garment(width, height, variant), black=(40, 60, 170), white=(255, 255, 255))


def phone_exif() -> bytes:
    """The orientation tag that turns a picture stored on its side upright, and the tags a phone writes
    (strings, a rational, a sub-IFD, GPS): what exif_transpose parses and writes back."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATE_90_CW_ON_DISPLAY
    exif[0x010F] = "FuzzCam"  # Make
    exif[0x0110] = "Model 7"  # Model
    exif[0x0131] = "fuzz 1.0"  # Software
    exif[0x0132] = "2026:11:29 10:00:00"  # DateTime
    exif[0x011A] = 72.0  # XResolution
    exif.get_ifd(EXIF_IFD)[0x9003] = "2026:11:29 10:00:00"  # DateTimeOriginal
    exif.get_ifd(GPS_IFD)[0x0001] = "N"  # GPSLatitudeRef
    return exif.tobytes()


def on_its_side(image: Image.Image) -> Image.Image:
    return image.rotate(90, expand=True)


def icc_jpeg() -> bytes:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return encode(coloured_garment(110, 130, variant=2), "JPEG", icc_profile=profile)


def palette_png(transparent: bool) -> bytes:
    palette = coloured_garment(120, 140, variant=3).quantize(16)
    if not transparent:
        return encode(palette, "PNG")
    return encode(palette, "PNG", transparency=palette.getpixel((0, 0)))  # the backdrop's entry


def rgba_png() -> bytes:
    """A cut-out: opaque garment, transparent backdrop."""
    rgba = Image.new("RGBA", (110, 130), (40, 60, 200, 255))
    rgba.putalpha(ImageOps.invert(garment(110, 130, variant=4)))
    return encode(rgba, "PNG")


def interlaced_png(image: Image.Image) -> bytes:
    """An 8-bit grayscale Adam7-interlaced PNG, written by hand: PIL reads interlaced PNGs but its
    encoder ignores interlace=."""
    pixels = np.asarray(image.convert("L"))
    height, width = pixels.shape
    passes = []
    for row0, col0, row_step, col_step in ADAM7:
        reduced = pixels[row0::row_step, col0::col_step]
        if reduced.size:  # each row starts with its filter type, 0 (none)
            passes.append(np.hstack([np.zeros((len(reduced), 1), np.uint8), reduced]).tobytes())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 1)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(b"".join(passes))) + png_chunk(b"IEND", b""))


def mpo() -> bytes:
    """A multi-picture JPEG (what stereo and some phone cameras write): two pictures, one file."""
    pictures = [coloured_garment(100, 120, variant=v) for v in (5, 6)]
    return encode(pictures[0], "MPO", save_all=True, append_images=pictures[1:])


SEED_FILES: dict[str, Callable[[], bytes]] = {
    "png-gray": lambda: encode(garment(100, 120, variant=0), "PNG"),
    "png-rgb": lambda: encode(coloured_garment(100, 120, variant=0), "PNG"),
    "png-palette": lambda: palette_png(transparent=False),
    "png-palette-transparent": lambda: palette_png(transparent=True),
    "png-rgba": rgba_png,
    "png-16-bit": sixteen_bit_png,
    "png-exif": lambda: encode(on_its_side(garment(100, 120, variant=11)), "PNG", exif=phone_exif()),
    "png-interlaced": lambda: interlaced_png(garment(90, 110, variant=7)),
    "jpeg-gray": lambda: encode(garment(100, 120, variant=8), "JPEG"),
    "jpeg-rgb": lambda: encode(coloured_garment(100, 120, variant=8), "JPEG"),
    "jpeg-exif": lambda: encode(on_its_side(coloured_garment(120, 150, variant=1)), "JPEG", exif=phone_exif()),
    "jpeg-icc": icc_jpeg,
    "jpeg-progressive": lambda: encode(coloured_garment(130, 150, variant=9), "JPEG", progressive=True),
    "jpeg-optimised": lambda: encode(coloured_garment(130, 150, variant=10), "JPEG", optimize=True),
    "jpeg-cmyk": cmyk_jpeg,
    "jpeg-mpo": mpo,
}


@functools.cache
def seed_files() -> dict[str, bytes]:
    return {kind: make() for kind, make in SEED_FILES.items()}


# ------------------------------------------------------------------------------------------ mutations


def jpeg_segments(data: bytes) -> Iterator[tuple[int, int]]:
    """(marker, offset of its 0xFF) of each JPEG segment that has a length field, up to the scan."""
    offset = 2
    while offset + 4 <= len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        if marker == 0xD8 or 0xD0 <= marker <= 0xD7:
            offset += 2
            continue
        yield marker, offset
        if marker == 0xDA:  # entropy-coded data follows
            return
        offset += 2 + struct.unpack_from(">H", data, offset + 2)[0]


def png_chunks(data: bytes) -> Iterator[tuple[bytes, int]]:
    """(type, offset of its length field) of each PNG chunk whose header lies inside the data."""
    offset = 8
    while offset + 8 <= len(data):
        yield data[offset + 4: offset + 8], offset
        offset += 12 + struct.unpack_from(">I", data, offset)[0]


def exif_tiff_offset(data: bytes) -> int | None:
    """Where the EXIF block (a TIFF header and its IFDs) starts: a JPEG's APP1 "Exif" or a PNG's eXIf."""
    if data.startswith(b"\x89PNG"):
        return next((offset + 8 for kind, offset in png_chunks(data) if kind == b"eXIf"), None)
    return next((offset + 10 for marker, offset in jpeg_segments(data)
                 if marker == 0xE1 and data[offset + 4: offset + 10] == b"Exif\0\0"), None)


def exif_ifd0(data: bytes) -> tuple[str, int, list[int]] | None:
    """(struct byte order, offset of the entry count, offsets of the entries) of the EXIF IFD0."""
    tiff = exif_tiff_offset(data)
    if tiff is None or tiff + 8 > len(data) or data[tiff: tiff + 2] not in (b"II", b"MM"):
        return None
    order = "<" if data[tiff: tiff + 2] == b"II" else ">"
    ifd = tiff + struct.unpack_from(order + "I", data, tiff + 4)[0]
    if ifd + 2 > len(data):
        return None
    entries = range(ifd + 2, ifd + 2 + 12 * struct.unpack_from(order + "H", data, ifd)[0], 12)
    return order, ifd, [entry for entry in entries if entry + 12 <= len(data)]


def size_fields(data: bytes) -> list[tuple[int, int]]:
    """(offset, width) of the fields a decoder sizes buffers or loops by: PNG chunk lengths and IHDR
    width/height; JPEG segment lengths and frame height/width; the EXIF IFD0 entry count and each
    entry's value count and value offset. Best effort on already damaged data."""
    if data.startswith(b"\x89PNG"):
        fields = [(16, 4), (20, 4)] + [(offset, 4) for _, offset in png_chunks(data)]
    else:
        fields = []
        for marker, offset in jpeg_segments(data):
            fields.append((offset + 2, 2))
            if marker in JPEG_FRAME_MARKERS:
                fields += [(offset + 5, 2), (offset + 7, 2)]
    exif = exif_ifd0(data)
    if exif:
        _, ifd, entries = exif
        fields += [(ifd, 2)] + [(entry + 4, 4) for entry in entries] + [(entry + 8, 4) for entry in entries]
    return [(offset, width) for offset, width in fields if offset + width <= len(data)]


def with_valid_crcs(data: bytearray) -> bytearray:
    """Every complete PNG chunk's CRC recomputed, so the damage reaches the code behind PIL's CRC check."""
    for kind, offset in list(png_chunks(bytes(data))):
        end = offset + 8 + struct.unpack_from(">I", data, offset)[0]
        if end + 4 <= len(data):
            data[end: end + 4] = struct.pack(">I", zlib.crc32(data[offset + 4: end]))
    return data


def position(rng: np.random.Generator, size: int) -> int:
    """A byte offset in [0, size), mostly among the headers."""
    end = min(size, HEADER_BYTES) if rng.random() < HEADER_BIAS else size
    return int(rng.integers(end))


def flip_bits(rng, data: bytearray) -> bytearray:
    for _ in range(rng.integers(1, 9)):
        data[position(rng, len(data))] ^= 1 << int(rng.integers(8))
    return data


def random_bytes(rng, data: bytearray) -> bytearray:
    for _ in range(rng.integers(1, 9)):
        data[position(rng, len(data))] = int(rng.integers(256))
    return data


def insert_run(rng, data: bytearray) -> bytearray:
    length = int(rng.integers(1, 65))
    run = rng.bytes(length) if rng.random() < 0.5 else bytes([int(rng.integers(256))]) * length
    at = position(rng, len(data))
    return data[:at] + run + data[at:]


def delete_run(rng, data: bytearray) -> bytearray:
    at = position(rng, len(data))
    return data[:at] + data[at + int(rng.integers(1, 65)):]


def truncate(rng, data: bytearray) -> bytearray:
    return data[: int(rng.integers(len(data)))]


def duplicate_chunk(rng, data: bytearray) -> bytearray:
    start = position(rng, len(data))
    chunk = data[start: start + int(rng.integers(1, 257))]
    at = position(rng, len(data))
    return data[:at] + chunk + data[at:]


def oversize_field(rng, data: bytearray) -> bytearray:
    """A length, count or dimension field overwritten with a huge value (a random spot if none is found)."""
    fields = size_fields(bytes(data)) or [(position(rng, len(data)), 4)]
    offset, width = fields[int(rng.integers(len(fields)))]
    value = int(LARGE_VALUES[int(rng.integers(len(LARGE_VALUES)))])
    data[offset: offset + width] = value.to_bytes(4, "big")[:width]
    return data


def retype_exif_entry(rng, data: bytearray) -> bytearray:
    """An EXIF IFD0 entry given another TIFF type (1-12), so its value no longer matches it (a random
    header byte if there is no EXIF)."""
    exif = exif_ifd0(bytes(data))
    new_type = int(rng.integers(1, 13))
    if not exif or not exif[2]:
        data[position(rng, len(data))] = new_type
        return data
    order, _, entries = exif
    entry = entries[int(rng.integers(len(entries)))]
    data[entry + 2: entry + 4] = struct.pack(order + "H", new_type)
    return data


MUTATIONS: dict[str, Callable[[np.random.Generator, bytearray], bytearray]] = {
    "flip-bits": flip_bits, "random-bytes": random_bytes, "insert-run": insert_run, "delete-run": delete_run,
    "truncate": truncate, "duplicate-chunk": duplicate_chunk, "oversize-field": oversize_field,
    "retype-exif-entry": retype_exif_entry,
}


def fuzz_case(seed: int, index: int) -> FuzzCase:
    """Case `index` of fuzz seed `seed`: seed files in turn, each damaged by 1-3 seeded mutations (then,
    for half the PNGs, given valid CRCs)."""
    seeds = seed_files()
    kind = list(seeds)[index % len(seeds)]
    rng = np.random.default_rng([seed, index])
    data, applied = bytearray(seeds[kind]), []
    for _ in range(rng.integers(1, MAX_MUTATIONS_PER_CASE + 1)):
        if not data:
            break
        name = list(MUTATIONS)[int(rng.integers(len(MUTATIONS)))]
        data = MUTATIONS[name](rng, data)
        applied.append(name)
    if kind.startswith("png") and data and rng.random() < PNG_CRC_FIX_SHARE:
        data = with_valid_crcs(data)
        applied.append("valid-crcs")
    return FuzzCase(f"{kind}-{index:05d}-{'+'.join(applied)}", kind, bytes(data))


def mutations(seed: int, count: int) -> Iterator[FuzzCase]:
    """The first `count` cases of fuzz seed `seed`: the same cases, in the same order, on every run."""
    return (fuzz_case(seed, index) for index in range(count))
