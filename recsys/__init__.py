"""recsys: "more like your history" recommendations from image embeddings.

TensorFlow Recommenders needs Keras 2, so the legacy-Keras switch is set here, before anything in
the package (or the caller) can import TensorFlow.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from recsys.errors import RecsysError  # noqa: E402
from recsys.settings import Settings  # noqa: E402

__all__ = ["RecsysError", "Settings", "__version__"]
__version__ = "0.1.0"
