"""The one place TensorFlow is imported from, and how many CPU cores this process may use.

TF Similarity 0.17.1 does not run on Keras 3, so TensorFlow must see TF_USE_LEGACY_KERAS=1 before
its first import (it then serves tf-keras as tf.keras). Every module that needs TensorFlow calls
these functions inside the function that needs it, so importing a flow module or the page stays fast.
"""

from __future__ import annotations

import os
import sys


def _prepare_environment() -> None:
    if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise RuntimeError(
            "TensorFlow was imported before storage.runtime could set TF_USE_LEGACY_KERAS=1; "
            "import it through storage.runtime.load_tensorflow()."
        )
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def load_tensorflow():
    """Return the tensorflow module, configured for tf-keras."""
    _prepare_environment()
    import tensorflow as tf

    return tf


def load_tensorflow_similarity():
    """Return the tensorflow_similarity module (imports TensorFlow first, configured)."""
    load_tensorflow()
    import tensorflow_similarity as tfsim

    return tfsim


def usable_cpus() -> int:
    """Cores this process may run on (its affinity mask, e.g. a container's limit), at least 1."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
