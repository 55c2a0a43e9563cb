"""The dataset description: what differs between datasets (image shape, channels, class names, how
images are normalised, where they came from), in one object instead of literals and branches across
the code.

Two kinds exist. Fashion-MNIST (FASHION_MNIST): 28x28 grey, a light garment on black, ten classes.
A labelled folder of photos (`photo_dataset`): colour kept, padded to a square of `side` pixels, class
names from the folder names, and a display copy of every item kept besides the network's input.
A data home holds one dataset: its description is home/dataset.json (written by the pipeline, read
by every flow, the page and the CLI), and every release manifest records the one it was built with.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from storage.errors import UserError

DATASET_FILE = "dataset.json"
UNLABELLED = -1  # the label of an item dropped without a class
GREY_ON_BLACK = "light-on-dark"  # Fashion-MNIST's conventions: grey, light object on black, cropped and centred
PHOTO = "photo"  # colour photos: upright, alpha on white, padded square with the border's colour
DISPLAY_SIDE = 256  # longest side of a photo's display copy: sharp on a phone, about 20 KB as JPEG
DEFAULT_PHOTO_SIDE = 64  # the network's input side for photos (README "Your own images" has the measurement)


class DatasetMismatchError(UserError, ValueError):
    """A run asked a data home for a dataset other than the one it holds."""


@dataclass(frozen=True)
class DatasetDescription:
    name: str
    side: int  # the network sees side x side pixels
    channels: int  # 1: grey, 3: RGB
    class_names: tuple[str, ...]
    conventions: str = GREY_ON_BLACK  # how any image file is normalised (storage/images.py)
    source: str = ""  # the folder a photo dataset is read from; "" for Fashion-MNIST (downloaded)
    display_side: int = 0  # longest side of the display copy kept per item; 0: the network's pixels are shown
    aliases: dict[str, int] = field(default_factory=dict, compare=False)  # extra drop-folder names per class
    allow_new_classes: bool = False  # the drop folder may add a class (indexed at once, trained at the next retrain)

    @property
    def pixel_shape(self) -> tuple[int, ...]:
        """One normalised image as stored and searched: (side, side), plus channels when there are several."""
        return (self.side, self.side) if self.channels == 1 else (self.side, self.side, self.channels)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """One image as the network takes it: (side, side, channels)."""
        return self.side, self.side, self.channels

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def class_slugs(self) -> tuple[str, ...]:
        return tuple(slug(name) for name in self.class_names)

    @property
    def title(self) -> str:
        """What the page and reports call this dataset."""
        return "Fashion-MNIST" if self.name == FASHION_MNIST.name else self.name

    def label_name(self, label: int) -> str:
        return self.class_names[label] if 0 <= label < self.num_classes else "unlabelled"

    def class_index(self, folder: str) -> int | None:
        """Class index for a folder name ("3", "dress", "Ankle Boot", an alias...), else None."""
        text = folder.strip()
        if text.isdigit() and int(text) < self.num_classes:
            return int(text)
        key = slug(text)
        if key in self.class_slugs:
            return self.class_slugs.index(key)
        return self.aliases.get(key)

    def with_classes(self, names: list[str] | tuple[str, ...]) -> "DatasetDescription":
        """This dataset with `names` as classes: the known ones keep their index, new ones come after."""
        known = list(self.class_names)
        known += [name for name in names if slug(name) not in self.class_slugs and slug(name) not in
                  {slug(k) for k in known}]
        return replace(self, class_names=tuple(known))

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "class_names": list(self.class_names)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DatasetDescription":
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**{**known, "class_names": tuple(known["class_names"])})


def slug(name: str) -> str:
    """A class name as the drop folder's sub-folder takes it: lower case, runs of other characters as "-"."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


FASHION_MNIST = DatasetDescription(
    name="fashion-mnist", side=28, channels=1, conventions=GREY_ON_BLACK,
    class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    # extra spellings people type for a class folder (compared after slugging)
    aliases={"t-shirt": 0, "tshirt": 0, "top": 0, "t-shirt-top": 0, "tee": 0, "trousers": 1, "pants": 1,
             "pullovers": 2, "sweater": 2, "dresses": 3, "coats": 4, "sandals": 5, "shirts": 6, "sneakers": 7,
             "bags": 8, "ankle-boots": 9, "boot": 9, "boots": 9},
)


def photo_dataset(folder: Path, class_names: list[str], side: int = DEFAULT_PHOTO_SIDE) -> DatasetDescription:
    """The description of a labelled folder of photos."""
    folder = Path(folder).resolve()
    return DatasetDescription(name=folder.name, side=side, channels=3, class_names=tuple(class_names),
                              conventions=PHOTO, source=str(folder), display_side=DISPLAY_SIDE)


def network_input(images: np.ndarray) -> np.ndarray:
    """Images (n, side, side) or (n, side, side, channels) as the network takes them: channels last."""
    return images[..., None] if images.ndim == 3 else images


def read_home_dataset(home) -> DatasetDescription | None:
    """The dataset a data home (storage.home.DataHome) holds; None for a home that never recorded one (a
    new home, or one made before homes recorded their dataset: Fashion-MNIST, the only dataset then)."""
    try:
        return DatasetDescription.from_dict(json.loads(home.store.read_bytes(DATASET_FILE)))
    except FileNotFoundError:
        return None


def write_home_dataset(home, dataset: DatasetDescription) -> None:
    home.store.write_bytes(DATASET_FILE, json.dumps(dataset.as_dict(), indent=2, sort_keys=True).encode())


def home_dataset(home) -> DatasetDescription:
    """The dataset a data home holds, Fashion-MNIST unless it recorded another."""
    return read_home_dataset(home) or FASHION_MNIST
