"""keras-reid: deep transfer learning for person re-identification in TF2 / Keras 3.

Implements Geng, Wang, Xiang and Tian, "Deep Transfer Learning for Person
Re-identification" (2016). Subpackages are imported explicitly by users; this
module stays import-light so that `python -m keras_reid.<tool> --help` is fast.
"""

__version__ = "0.1.0"
