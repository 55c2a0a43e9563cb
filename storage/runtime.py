"""The one place TensorFlow is imported from, and how many CPU cores this process may use.

TF Similarity 0.17.1 does not run on Keras 3, so TensorFlow must see TF_USE_LEGACY_KERAS=1 before
its first import (it then serves tf-keras as tf.keras). Every module that needs TensorFlow calls
these functions inside the function that needs it, so importing a flow module or the page stays fast.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator

VERBOSE_ENV = "FASHION_SIM_VERBOSE"  # set (to anything but 0/false) to see what native libraries print


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").lower() not in ("", "0", "false", "no")


def add_verbose_flag(parser) -> None:
    """--verbose for a command line (argparse): the same as FASHION_SIM_VERBOSE=1 for that run."""
    parser.add_argument("--verbose", action="store_true",
                        help=f"show tracebacks and what native libraries print (also: {VERBOSE_ENV}=1)")


def parse_command_line(parser, argv: list[str] | None = None):
    """`parser.parse_args(argv)`, with --verbose (add_verbose_flag) applied to this process."""
    args = parser.parse_args(argv)
    if args.verbose:
        os.environ[VERBOSE_ENV] = "1"
    return args


@contextmanager
def quiet_native_output() -> Iterator[None]:
    """Send what is written to this process's stdout and stderr meanwhile to /dev/null, unless
    FASHION_SIM_VERBOSE is set: TensorFlow's C++ start-up lines (its absl logging ignores
    TF_CPP_MIN_LOG_LEVEL before it is initialised), NMSLIB's build advice, TF Similarity's prints and
    tqdm bars, LiteRT's delegate notice. It acts on the file descriptors, so keep the block to the
    call that prints: anything else written meanwhile, from any thread, is lost too."""
    if verbose():
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def _prepare_environment() -> None:
    if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise RuntimeError(
            "TensorFlow was imported before storage.runtime could set TF_USE_LEGACY_KERAS=1; "
            "import it through storage.runtime.load_tensorflow()."
        )
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose() else "3")


def load_tensorflow():
    """Return the tensorflow module, configured for tf-keras; its start-up lines (and the device
    probe, which prints the CUDA ones) stay off the terminal unless FASHION_SIM_VERBOSE is set."""
    _prepare_environment()
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with quiet_native_output():
        import tensorflow as tf

        tf.config.list_physical_devices()
    return tf


def load_tensorflow_similarity():
    """Return the tensorflow_similarity module (imports TensorFlow first, configured)."""
    load_tensorflow()
    with quiet_native_output():  # NMSLIB's advice to build it from sources
        import tensorflow_similarity as tfsim

    return tfsim


def usable_cpus() -> int:
    """Cores this process may run on (its affinity mask, e.g. a container's limit), at least 1."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
