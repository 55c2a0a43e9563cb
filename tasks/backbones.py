"""ImageNet-pretrained Keras application backbones under a metric-embedding head, for photos.

`--architecture mobilenet_v3_small` or `efficientnet_b0` (224 px input) starts from the no-top ImageNet
weights: the .h5 file Keras' applications module downloads, given with `--weights FILE`, found in
Keras' cache (~/.keras/models/), or fetched by Keras when the machine is online. When none of these
works the run stops saying which file to get and where to put it. Both networks take 0-255 pixels
(their preprocessing is inside the model) and are fine-tuned whole. A retrain starts from the live
release's weights and needs no file.

The tests build these with random weights saved to a file; the online download and the real ImageNet
file are not exercised here (the machine that runs them is offline).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from storage.errors import UserError


class BackboneWeightsError(UserError, RuntimeError):
    """A pretrained backbone's weights could not be loaded; the message says which file to get."""


@dataclass(frozen=True)
class Backbone:
    application: str  # the tf.keras.applications constructor
    side: int  # the input side its ImageNet weights were trained at
    weights_file: str  # what Keras' applications module downloads (no top)
    url: str
    options: tuple[tuple[str, object], ...] = ()

    def network(self, tf, input_shape: tuple[int, int, int], weights: str | None):
        build = getattr(tf.keras.applications, self.application)
        return build(input_shape=input_shape, include_top=False, weights=weights, pooling="avg", **dict(self.options))


BACKBONES = {
    "mobilenet_v3_small": Backbone(
        "MobileNetV3Small", 224, "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/"
        "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5", (("include_preprocessing", True),)),
    "efficientnet_b0": Backbone(
        "EfficientNetB0", 224, "efficientnetb0_notop.h5",
        "https://storage.googleapis.com/keras-applications/efficientnetb0_notop.h5"),
}


def backbone_model(name: str, tf, tfsim, embedding_size: int, input_shape: tuple[int, int, int],
                   weights: str | None):
    """(inputs, outputs) of the backbone with its ImageNet weights (`weights`: a file, "imagenet" for
    Keras' cache or download, None for random initial weights) and a MetricEmbedding on its pooled output."""
    backbone = BACKBONES[name]
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise BackboneWeightsError(f"--weights {weights} is not a file; {_get_it(name)}")
    try:
        network = backbone.network(tf, input_shape, weights)
    except Exception as error:  # noqa: BLE001 - offline, a wrong file, a cut download: all say the same
        detail = " ".join(str(error).split())[:200]
        raise BackboneWeightsError(f"could not load the ImageNet weights of {name} ({detail}); {_get_it(name)}") from None
    outputs = tfsim.layers.MetricEmbedding(embedding_size)(network.output)
    return network.input, outputs


def _get_it(name: str) -> str:
    backbone = BACKBONES[name]
    return (f"download {backbone.url} on a machine that is online and pass it with --weights FILE (or put it in "
            f"~/.keras/models/{backbone.weights_file}), or choose --architecture photo, which needs no weights")
