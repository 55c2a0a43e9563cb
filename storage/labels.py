"""Class names (from the dataset description), and the folder names the drop folder accepts for them."""

from __future__ import annotations

import re

from storage.dataset import FASHION_MNIST

CLASS_NAMES = FASHION_MNIST.class_names
NUM_CLASSES = FASHION_MNIST.num_classes
UNLABELLED = -1


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


CLASS_SLUGS = tuple(slug(name) for name in CLASS_NAMES)
# Extra spellings people type for a class folder (all compared after slugging).
_ALIASES = {
    "t-shirt": 0, "tshirt": 0, "top": 0, "t-shirt-top": 0, "tee": 0,
    "trousers": 1, "pants": 1, "pullovers": 2, "sweater": 2, "dresses": 3, "coats": 4,
    "sandals": 5, "shirts": 6, "sneakers": 7, "bags": 8, "ankle-boots": 9, "boot": 9, "boots": 9,
}


def label_name(label: int) -> str:
    return CLASS_NAMES[label] if 0 <= label < NUM_CLASSES else "unlabelled"


def parse_class_folder(folder: str) -> int | None:
    """Class index for a drop-folder sub-folder name ("3", "dress", "Ankle Boot"...), else None."""
    text = folder.strip()
    if text.isdigit() and int(text) < NUM_CLASSES:
        return int(text)
    key = slug(text)
    if key in CLASS_SLUGS:
        return CLASS_SLUGS.index(key)
    return _ALIASES.get(key)
