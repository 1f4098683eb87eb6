"""recsys: "more like your history" recommendations from image embeddings.

TensorFlow Recommenders needs Keras 2, so the legacy-Keras switch is set here, before anything in
the package (or the caller) can import TensorFlow.
"""

import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ start-up lines (oneDNN notes, "failed call to cuInit" on a CPU machine) read
# like failures; `recsys --verbose` shows them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class _SilentImport:
    """Meta-path finder: the first ``import tensorflow`` runs with file descriptor 2 pointed at
    /dev/null. TensorFlow's shared libraries log through absl before absl is initialised, which
    writes to stderr whatever TF_CPP_MIN_LOG_LEVEL says; Python errors still raise as usual."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        import importlib.util

        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def quietly(module) -> None:
            sys.stderr.flush()
            saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, 2)
                exec_module(module)
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                os.close(devnull)

        spec.loader.exec_module = quietly
        return spec


def quiet_tensorflow() -> None:
    """Hide TensorFlow's and absl's start-up noise (call before TensorFlow is imported)."""
    import logging

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in ("tensorflow", "absl", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "tensorflow" not in sys.modules and not any(isinstance(f, _SilentImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _SilentImport())


from recsys.errors import RecsysError  # noqa: E402
from recsys.settings import Settings  # noqa: E402

__all__ = ["RecsysError", "Settings", "__version__"]
__version__ = "0.1.0"
