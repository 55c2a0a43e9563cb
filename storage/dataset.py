"""The dataset description: what differs between datasets (image shape, channels, class names, how
images are normalised), in one object instead of literals and branches across the code.

Fashion-MNIST is the only instance today: 28x28 grey images of a light garment on black, ten classes.
The "own images" issue adds a description per labelled folder of photos and stores it with the data
and with every release.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetDescription:
    name: str
    side: int  # images are side x side pixels
    channels: int  # 1: grey
    class_names: tuple[str, ...]
    light_on_dark: bool  # normalised images show a light object on a dark background

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


FASHION_MNIST = DatasetDescription(
    name="fashion-mnist", side=28, channels=1, light_on_dark=True,
    class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
)
