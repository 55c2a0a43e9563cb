"""A corpus of broken and awkward inputs, built fresh in a temporary directory by each test that needs it.

`IMAGES` maps a case name to a function returning the file's bytes (the upload path feeds these to
normalise_image); `build_drop_corpus` lays the same files out in a drop folder together with the
cases that only exist on disk (hidden file, partial download, unknown class folder, symlink...).
Garments are drawn, not loaded: a dark T-shirt silhouette with a pocket on one side (so rotations and
flips are visible) on a white backdrop, like a product photo.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from storage.home import REASON_SUFFIX

EXIF_ORIENTATION = 0x0112
ROTATE_90_CW_ON_DISPLAY = 6  # EXIF orientation: the stored pixels must turn 90 degrees clockwise


def garment(width: int = 300, height: int = 360, variant: int = 0, ink: int = 50) -> Image.Image:
    """A grayscale ("L") T-shirt on white; `variant` changes the sleeves so each case is a distinct item."""
    image = Image.new("L", (width, height), 255)
    sx, sy = width / 100, height / 100
    sleeve = 18 + 4 * variant
    outline = [(30, 10), (42, 16), (58, 16), (70, 10), (95, sleeve + 14), (86, sleeve + 26), (75, 22),
               (75, 92), (25, 92), (25, 22), (14, sleeve + 26), (5, sleeve + 14)]
    draw = ImageDraw.Draw(image)
    draw.polygon([(x * sx, y * sy) for x, y in outline], fill=ink)
    draw.rectangle([58 * sx, 30 * sy, 68 * sx, 42 * sy], fill=min(ink + 120, 230))  # a pocket, on one side
    return image


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_claiming(width: int, height: int) -> bytes:
    """A few hundred bytes whose header claims width x height 8-bit gray pixels: a decompression bomb's
    header without its payload (nothing of that size is ever allocated here)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b""))


def upright_jpeg() -> bytes:
    return encode(garment(240, 320, variant=3).convert("RGB"), "JPEG", quality=95)


def exif_rotated_jpeg(orientation: int | None = ROTATE_90_CW_ON_DISPLAY) -> bytes:
    """The upright garment stored turned 90 degrees counter-clockwise, with the EXIF tag that turns it back."""
    stored = garment(240, 320, variant=3).convert("RGB").rotate(90, expand=True)
    exif = Image.Exif()
    if orientation is not None:
        exif[EXIF_ORIENTATION] = orientation
    return encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def sixteen_bit_png() -> bytes:
    wide = np.asarray(garment(200, 240, variant=1), dtype=np.uint16) * 257
    return encode(Image.fromarray(wide), "PNG")


def eight_bit_twin_of_sixteen_bit() -> bytes:
    return encode(garment(200, 240, variant=1), "PNG")


def cmyk_jpeg() -> bytes:
    return encode(garment(220, 260, variant=2).convert("RGB").convert("CMYK"), "JPEG", quality=95)


def gray_twin_of_cmyk() -> bytes:
    return encode(garment(220, 260, variant=2), "PNG")


def cutout_mask() -> Image.Image:
    return Image.eval(garment(260, 300, variant=4), lambda v: 255 - v)  # opaque where the garment is


def rgba_png() -> bytes:
    """A blue garment on a fully transparent background (a cut-out product shot)."""
    mask = cutout_mask()
    rgba = Image.new("RGBA", mask.size, (40, 60, 200, 255))
    rgba.putalpha(mask)
    return encode(rgba, "PNG")


def white_twin_of_rgba() -> bytes:
    mask = cutout_mask()
    rgb = Image.new("RGB", mask.size, (255, 255, 255))
    rgb.paste(Image.new("RGB", mask.size, (40, 60, 200)), mask=mask)
    return encode(rgb, "PNG")


def huge_photo_jpeg() -> bytes:
    """4000 x 3000 (12 megapixels): a phone photo, under MAX_PIXELS and MAX_FILE_BYTES."""
    return encode(garment(4000, 3000, variant=5).convert("RGB"), "JPEG", quality=85)


def small_twin_of_huge_photo() -> bytes:
    return encode(garment(400, 300, variant=5).convert("RGB"), "JPEG", quality=95)


def animated(fmt: str) -> bytes:
    frames = [garment(60, 72, variant=v).convert("RGB" if fmt == "PNG" else "P") for v in (0, 1)]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def tiny_3x3() -> bytes:
    pixels = np.full((3, 3), 255, np.uint8)
    pixels[1, 1] = 0
    return encode(Image.fromarray(pixels), "PNG")


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


# Not garments: what issue 19 saw searched as garments (tests/test_no_match.py, tests/test_app.py).
def drawn_circle() -> bytes:
    """A circle drawn on white (before the match score it matched "Bag" at 0.070)."""
    image = Image.new("RGB", (300, 300), "white")
    ImageDraw.Draw(image).ellipse([40, 40, 260, 260], outline="black", width=6)
    return encode(image, "PNG")


def noise_image() -> bytes:
    """A 200 px noise image (it matched "Shirt" at 0.134 against a limit of 0.135)."""
    return encode(Image.fromarray(np.random.default_rng(7).integers(0, 256, (200, 200, 3), dtype=np.uint8)), "PNG")


def text_image() -> bytes:
    image = Image.new("RGB", (360, 120), "white")
    ImageDraw.Draw(image).text((10, 20), "Hello, shop!", fill="black", font=ImageFont.load_default(size=48))
    return encode(image, "JPEG")


IMAGES: dict[str, Callable[[], bytes]] = {
    "zero-byte": lambda: b"",
    "text-named-png": lambda: b"name,price\nshirt,12\n" * 20,
    "truncated-png": lambda: truncated(encode(garment(variant=6), "PNG")),
    "truncated-jpeg": lambda: truncated(encode(garment(variant=6).convert("RGB"), "JPEG")),
    "bomb-30000x30000-png": lambda: png_claiming(30_000, 30_000),
    "animated-gif": lambda: animated("GIF"),
    "animated-png": lambda: animated("PNG"),
    "16-bit-png": sixteen_bit_png,
    "cmyk-jpeg": cmyk_jpeg,
    "rgba-transparent-png": rgba_png,
    "exif-rotated-jpeg": exif_rotated_jpeg,
    "tiny-3x3-png": tiny_3x3,
    "blank-white-png": lambda: encode(Image.new("L", (64, 64), 255), "PNG"),
    "huge-photo-4000x3000-jpeg": huge_photo_jpeg,
    "non-ascii-name-png": lambda: encode(garment(180, 200, variant=7), "PNG"),
}

# Where each image case goes in the drop folder (relative to incoming/).
DROP_PATHS = {
    "zero-byte": "empty.png",
    "text-named-png": "price list.png",
    "truncated-png": "truncated.png",
    "truncated-jpeg": "shirt/truncated.jpg",
    "bomb-30000x30000-png": "bomb.png",
    "animated-gif": "animated.gif",
    "animated-png": "animated.png",
    "16-bit-png": "dress/16-bit.png",
    "cmyk-jpeg": "coat/cmyk.JPG",
    "rgba-transparent-png": "rgba.png",
    "exif-rotated-jpeg": "0/exif-rotated.jpeg",
    "tiny-3x3-png": "tiny.png",
    "blank-white-png": "blank.png",
    "huge-photo-4000x3000-jpeg": "huge photo.jpg",
    "non-ascii-name-png": "Ankle Boot/robe d'été №2 (copie).png",
}

# Cases that only exist as drop-folder entries: relative path -> what is written there.
DROP_ONLY = {
    "hidden": ".hidden.png",
    "partial-download": "dress/new.png.crdownload",
    "unknown-class-folder": "hats/cap.png",
    "nested-too-deep": "dress/summer/deep.png",
    "symlink": "link.png",
    "duplicate": "zz-same-as-rgba.png",
    "just-dropped": "bag/just-dropped.png",
    "not-an-image-extension": "notes.txt",
}


def build_drop_corpus(incoming: Path, outside: Path) -> dict[str, str]:
    """Write every case into `incoming` (symlink target in `outside`, left alone by the drop folder).

    Every file and folder is dated two hours back except the file "just-dropped", so a run with a
    settle time under two hours leaves exactly that one waiting (besides the hidden and partial ones).
    Returns case name -> path relative to incoming/.
    """
    layout = {**DROP_PATHS, **DROP_ONLY}
    payloads = {DROP_PATHS[name]: make() for name, make in IMAGES.items()}
    payloads[DROP_ONLY["hidden"]] = encode(garment(variant=8), "PNG")
    payloads[DROP_ONLY["partial-download"]] = truncated(encode(garment(variant=9), "PNG"))
    payloads[DROP_ONLY["unknown-class-folder"]] = encode(garment(variant=10), "PNG")
    payloads[DROP_ONLY["nested-too-deep"]] = encode(garment(variant=11), "PNG")
    payloads[DROP_ONLY["duplicate"]] = payloads[DROP_PATHS["rgba-transparent-png"]]
    payloads[DROP_ONLY["just-dropped"]] = encode(garment(variant=12), "PNG")
    payloads[DROP_ONLY["not-an-image-extension"]] = b"remember to buy socks\n"
    for relative, data in payloads.items():
        (incoming / relative).parent.mkdir(parents=True, exist_ok=True)
        (incoming / relative).write_bytes(data)
    outside.mkdir(parents=True, exist_ok=True)
    target = outside / "elsewhere.png"
    target.write_bytes(encode(garment(variant=13), "PNG"))
    (incoming / DROP_ONLY["symlink"]).symlink_to(target)
    two_hours_ago = os.path.getmtime(target) - 7200
    folders = {parent for relative in layout.values() for parent in Path(relative).parents if parent != Path(".")}
    for relative in [*layout.values(), *map(str, folders)]:
        if relative != DROP_ONLY["just-dropped"]:
            os.utime(incoming / relative, (two_hours_ago, two_hours_ago), follow_symlinks=False)
    return layout


def _files_under(folder: Path) -> set[str]:
    """Every file or symlink below `folder`, relative, reason files excluded."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if (p.is_file() or p.is_symlink()) and not p.name.endswith(REASON_SUFFIX)}


def accounted(home) -> tuple[set[str], set[str], set[str]]:
    """(processed, rejected, waiting) paths relative to incoming/, read from the disk."""
    processed = {path.split("/", 1)[1] for path in _files_under(home.processed)}
    rejected = {path.split("/", 1)[1] for path in _files_under(home.rejected)}
    return processed, rejected, _files_under(home.incoming)
