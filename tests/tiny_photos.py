"""A tiny labelled folder of colour "product photos": each class a shape in a colour of its own, at a
random place and size on a light, noisy backdrop; JPEG and PNG, several sizes and modes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# folder name -> (colour, shape); the names exercise slugs ("Red Dress" -> red-dress)
CLASSES = {"Red Dress": ((200, 30, 40), "ellipse"), "blue-shoes": ((30, 60, 200), "rectangle"),
           "hat": ((40, 150, 60), "triangle")}


def photo(label: int, rng: np.random.Generator, size: tuple[int, int] | None = None) -> Image.Image:
    colour, shape = list(CLASSES.values())[label]
    width, height = size or (int(rng.integers(60, 120)), int(rng.integers(60, 140)))
    backdrop = rng.integers(200, 250, size=3)
    pixels = np.clip(backdrop + rng.normal(0, 8, size=(height, width, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    side = int(min(width, height) * rng.uniform(0.5, 0.8))
    left, top = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
    tint = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in colour)
    box = (left, top, left + side, top + side)
    if shape == "ellipse":
        draw.ellipse(box, fill=tint)
    elif shape == "rectangle":
        draw.rectangle((left, top + side // 4, left + side, top + 3 * side // 4), fill=tint)
    else:
        draw.polygon([(left + side // 2, top), (left, top + side), (left + side, top + side)], fill=tint)
    return image


def save(image: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG" if path.suffix == ".jpg" else "PNG")
    return path


def write_photo_folder(folder: Path, per_class: int = 12, seed: int = 0, split: str = "") -> Path:
    """folder/<class>/<n>.jpg|png (every third a PNG, one of them RGBA); with `split` (e.g. "validation")
    the layout is folder/train/<class>/ plus folder/<split>/<class>/ with a third as many images."""
    rng = np.random.default_rng(seed)
    parts = [("train" if split else "", per_class)] + ([(split, max(2, per_class // 3))] if split else [])
    for part, count in parts:
        for label, name in enumerate(CLASSES):
            for number in range(count):
                image = photo(label, rng)
                suffix = ".png" if number % 3 == 2 else ".jpg"
                if number == 2:
                    image = image.convert("RGBA")
                save(image, folder / part / name / f"{number:03d}{suffix}")
    return folder
