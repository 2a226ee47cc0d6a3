"""keras-reid: deep transfer learning for person re-identification in TF2 / Keras 3.

Implements Geng, Wang, Xiang and Tian, "Deep Transfer Learning for Person
Re-identification" (2016). Subpackages are imported explicitly by users; this
module stays import-light so that `python -m keras_reid.<tool> --help` is fast:
`keras_reid.Embedder` (keras_reid/embedder.py, which needs TensorFlow) is
imported on first use.
"""

from keras_reid import onednn as _onednn

# Before any keras_reid module imports TensorFlow (keras_reid/onednn.py).
_onednn.enable_by_default()

__version__ = "0.1.0"

__all__ = ["Embedder"]


def __getattr__(name: str):
  # PEP 562: `import keras_reid` does not import TensorFlow; the first
  # `keras_reid.Embedder` does.
  if name == "Embedder":
    from keras_reid.embedder import Embedder  # pylint: disable=import-outside-toplevel
    return Embedder
  raise AttributeError(f"module 'keras_reid' has no attribute {name!r}")
