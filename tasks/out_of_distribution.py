"""out_of_distribution: seeded pictures that are not garments, as a user would upload them.

What the no-match score is calibrated against (tasks/evaluate.py) and what benchmarks/no_match.py
reports on. Seven kinds: circles, other drawn shapes, noise (up to large noise images), gradients,
text, patterns (checkerboards, stripes, dots, grids) and crops of synthesised scenes (sky, ground,
sun, hills, houses, trees). Each picture has its own size (24 to 640 px a side, not square), colours
and encoding (PNG or JPEG), and reaches the model the way an upload does: encoded, then
storage.images.normalise_image with the release's dataset. Nothing is downloaded; the only font is
the one Pillow ships.

Seeds: the evaluation calibrates on CALIBRATION_SEED, the benchmark reports on HELD_OUT_SEED; a
picture is drawn from (seed, kind, index) alone, so the two sets never share a picture.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from storage.dataset import DatasetDescription
from storage.images import ImageRejected, normalise_image

KINDS = ("circle", "shape", "noise", "gradient", "text", "pattern", "scene")
CALIBRATION_SEED = 1  # the evaluation's (every pipeline and retrain run)
HELD_OUT_SEED = 2  # benchmarks/no_match.py's: never seen by a calibration
MIN_SIDE, MAX_SIDE = 24, 640  # larger uploads are shrunk by normalise_image before anything else
LARGE_SIDE = 200  # noise pictures at least this wide: the 200 px noise image matched "Shirt"
WORDS = ("SALE", "hello", "Summer 2026", "free shipping", "42", "NEW IN", "menu", "lorem ipsum dolor",
         "Invoice #1187", "ABC", "ok", "weekend", "photo_0193.jpg", "Thank you!", "12:45", "www")


@dataclass(frozen=True)
class OutOfDistributionImage:
    kind: str
    data: bytes  # the encoded file (PNG or JPEG), as an upload would send it


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _size(rng: np.random.Generator, low: int = MIN_SIDE) -> tuple[int, int]:
    width = int(rng.integers(low, MAX_SIDE + 1))
    return width, int(np.clip(width * rng.uniform(0.5, 2.0), low, MAX_SIDE))


def _canvas(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A plain background: white, black or any colour (what shapes and text are drawn on)."""
    background = ((255, 255, 255), (0, 0, 0), _colour(rng))[int(rng.integers(0, 3))]
    return Image.new("RGB", size, background)


def _box(rng: np.random.Generator, size: tuple[int, int], square: bool = False) -> list[int]:
    """A box inside a picture of `size`, at least a fifth of its shorter side."""
    width, height = size
    side = min(width, height)
    w = int(rng.uniform(0.2, 0.95) * side) if square else int(rng.uniform(0.2, 0.95) * width)
    h = w if square else int(rng.uniform(0.2, 0.95) * height)
    left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    return [left, top, left + max(w, 2), top + max(h, 2)]


def _outline_width(rng: np.random.Generator, size: tuple[int, int]) -> int:
    return max(1, int(min(size) * rng.uniform(0.005, 0.08)))


def circle(rng: np.random.Generator) -> Image.Image:
    """One or a few circles, filled or outlined (the issue's drawn circle matched "Bag" at 0.070)."""
    size = _size(rng)
    image = _canvas(rng, size)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.choice([1, 1, 1, 2, 3]))):
        fill = _colour(rng) if rng.random() < 0.5 else None
        draw.ellipse(_box(rng, size, square=True), fill=fill, outline=_colour(rng), width=_outline_width(rng, size))
    return image


def shape(rng: np.random.Generator) -> Image.Image:
    """Rectangles, triangles, stars, polygons and scribbled lines."""
    size = _size(rng)
    image = _canvas(rng, size)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 5))):
        left, top, right, bottom = _box(rng, size)
        fill = _colour(rng) if rng.random() < 0.5 else None
        what = int(rng.integers(0, 4))
        if what == 0:
            draw.rectangle([left, top, right, bottom], fill=fill, outline=_colour(rng),
                           width=_outline_width(rng, size))
        elif what == 3:
            points = [(int(rng.integers(0, size[0])), int(rng.integers(0, size[1])))
                      for _ in range(int(rng.integers(2, 7)))]
            draw.line(points, fill=_colour(rng), width=_outline_width(rng, size))
        else:
            corners = int(rng.integers(3, 9)) * (2 if what == 2 else 1)
            angles = np.sort(rng.uniform(0, 2 * np.pi, corners)) if what == 1 else np.linspace(0, 2 * np.pi, corners,
                                                                                                endpoint=False)
            radii = np.where(np.arange(corners) % 2, 0.45, 1.0) if what == 2 else np.ones(corners)
            cx, cy, rx, ry = (left + right) / 2, (top + bottom) / 2, (right - left) / 2, (bottom - top) / 2
            draw.polygon([(cx + rx * r * np.cos(a), cy + ry * r * np.sin(a)) for a, r in zip(angles, radii)],
                         fill=fill or _colour(rng))
    return image


def noise(rng: np.random.Generator) -> Image.Image:
    """Uniform or Gaussian noise, grey or colour, sharp or blurred into blobs; at least LARGE_SIDE wide."""
    width, height = _size(rng, LARGE_SIDE)
    channels = 3 if rng.random() < 0.5 else 1
    if rng.random() < 0.5:
        pixels = rng.integers(0, 256, (height, width, channels))
    else:
        pixels = np.clip(rng.normal(rng.uniform(60, 200), rng.uniform(20, 80), (height, width, channels)), 0, 255)
    image = Image.fromarray(pixels.astype(np.uint8).squeeze(axis=2) if channels == 1 else pixels.astype(np.uint8))
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(1, 6)))
    return image.convert("RGB")


def gradient(rng: np.random.Generator) -> Image.Image:
    """A linear or radial blend between two or three colours."""
    width, height = _size(rng)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * np.pi)
        t = x * np.cos(angle) + y * np.sin(angle)
    else:
        t = np.hypot(x - rng.uniform(0, width), y - rng.uniform(0, height))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    stops = np.array([_colour(rng) for _ in range(int(rng.integers(2, 4)))], dtype=np.float32)
    positions = np.linspace(0, 1, len(stops))
    pixels = np.stack([np.interp(t, positions, stops[:, c]) for c in range(3)], axis=-1)
    return Image.fromarray(pixels.astype(np.uint8))


def text(rng: np.random.Generator) -> Image.Image:
    """One to four lines of words in Pillow's own font, in any colour, on a plain background."""
    size = _size(rng)
    image = _canvas(rng, size)
    draw = ImageDraw.Draw(image)
    lines = int(rng.integers(1, 5))
    font = ImageFont.load_default(size=max(8, int(min(size[1] / (lines + 1), size[0] / 6) * rng.uniform(0.5, 1.0))))
    words = "\n".join(" ".join(rng.choice(WORDS, int(rng.integers(1, 3)))) for _ in range(lines))
    draw.multiline_text((int(rng.integers(0, max(1, size[0] // 4))), int(rng.integers(0, max(1, size[1] // 4)))),
                        words, fill=_colour(rng), font=font)
    return image


def pattern(rng: np.random.Generator) -> Image.Image:
    """Checkerboards, stripes (any angle), dots and grids in two colours."""
    width, height = _size(rng)
    period = max(2.0, min(width, height) / rng.uniform(2, 16))
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    what = int(rng.integers(0, 4))
    if what == 0:
        on = ((x // period).astype(int) + (y // period).astype(int)) % 2 == 0
    elif what == 1:
        angle = rng.uniform(0, np.pi)
        on = ((x * np.cos(angle) + y * np.sin(angle)) // (period / 2)).astype(int) % 2 == 0
    elif what == 2:
        on = np.hypot(x % period - period / 2, y % period - period / 2) < period * rng.uniform(0.15, 0.45)
    else:
        on = (x % period < max(1.0, period / 8)) | (y % period < max(1.0, period / 8))
    first, second = np.array(_colour(rng)), np.array(_colour(rng))
    if np.abs(first - second).sum() < 60:
        second = 255 - first
    return Image.fromarray(np.where(on[..., None], first, second).astype(np.uint8))


def scene(rng: np.random.Generator) -> Image.Image:
    """A crop of a synthesised landscape: sky, ground, sun, hills, houses and trees."""
    width, height = 1200, 900
    horizon = int(height * rng.uniform(0.4, 0.75))
    y = np.arange(height, dtype=np.float32)[:, None, None] / height
    top, low = np.array(_colour(rng)), np.array(_colour(rng))
    pixels = np.broadcast_to(top * (1 - y) + low * y, (height, width, 3)).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    sun = int(rng.uniform(30, 120))
    cx, cy = int(rng.uniform(0, width)), int(rng.uniform(0, horizon))
    draw.ellipse([cx - sun, cy - sun, cx + sun, cy + sun], fill=_colour(rng))
    for _ in range(int(rng.integers(1, 4))):  # hills
        peak, spread = rng.uniform(0, width), rng.uniform(200, 700)
        draw.polygon([(peak - spread, horizon), (peak, horizon - rng.uniform(60, 300)), (peak + spread, horizon)],
                     fill=_colour(rng))
    draw.rectangle([0, horizon, width, height], fill=_colour(rng))
    for _ in range(int(rng.integers(0, 5))):  # houses
        left, w, h = rng.uniform(0, width), rng.uniform(60, 200), rng.uniform(60, 200)
        base = horizon + rng.uniform(0, (height - horizon) / 2)
        draw.rectangle([left, base - h, left + w, base], fill=_colour(rng))
        draw.polygon([(left - 10, base - h), (left + w / 2, base - h - w / 2), (left + w + 10, base - h)],
                     fill=_colour(rng))
    for _ in range(int(rng.integers(0, 8))):  # trees
        x0, base = rng.uniform(0, width), horizon + rng.uniform(0, height - horizon)
        trunk, crown = rng.uniform(40, 140), rng.uniform(25, 80)
        draw.rectangle([x0 - 6, base - trunk, x0 + 6, base], fill=_colour(rng))
        draw.ellipse([x0 - crown, base - trunk - 2 * crown, x0 + crown, base - trunk], fill=_colour(rng))
    crop_w, crop_h = _size(rng, 80)
    crop_w, crop_h = min(crop_w, width), min(crop_h, height)
    left, upper = int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1))
    return image.crop((left, upper, left + crop_w, upper + crop_h))


DRAW = {"circle": circle, "shape": shape, "noise": noise, "gradient": gradient, "text": text,
        "pattern": pattern, "scene": scene}


def encode(image: Image.Image, rng: np.random.Generator) -> bytes:
    """PNG, or JPEG at a quality a phone or a web page would use; sometimes grey, as some uploads are."""
    if rng.random() < 0.2:
        image = image.convert("L")
    buffer = io.BytesIO()
    if rng.random() < 0.5:
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format="JPEG", quality=int(rng.integers(60, 96)))
    return buffer.getvalue()


def picture(seed: int, kind: str, index: int) -> OutOfDistributionImage:
    """Picture `index` of `kind` for `seed`: the same three numbers always give the same file."""
    rng = np.random.default_rng([seed, KINDS.index(kind), index])
    return OutOfDistributionImage(kind, encode(DRAW[kind](rng), rng))


def pictures(seed: int, per_kind: int, kinds: tuple[str, ...] = KINDS) -> list[OutOfDistributionImage]:
    return [picture(seed, kind, index) for kind in kinds for index in range(per_kind)]


def normalised(images: list[OutOfDistributionImage], dataset: DatasetDescription) -> tuple[np.ndarray, np.ndarray]:
    """(pixels, kinds) of the pictures the dataset's normalise_image accepts, as a query would reach the
    model; the ones it rejects (a flat colour: "no object found") never reach a search, so they are left out."""
    pixels, kinds = [], []
    for image in images:
        try:
            pixels.append(normalise_image(image.data, dataset).pixels)
        except ImageRejected:
            continue
        kinds.append(image.kind)
    empty = np.zeros((0, *dataset.pixel_shape), np.uint8)
    return (np.stack(pixels) if pixels else empty), np.array(kinds, dtype=str)
