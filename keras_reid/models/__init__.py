"""Backbones, Re-ID layers and heads, model builders.

Import the submodules (`keras_reid.models.builders`, `.backbones`, `.layers`,
`.heads`, `.googlenet`). `keras_reid.models.BACKBONES` is the backbone
registry, loaded on first access so that importing the package stays cheap.
"""


def __getattr__(name):
  if name == "BACKBONES":
    from keras_reid.models.backbones import BACKBONES  # pylint: disable=g-import-not-at-top
    return BACKBONES
  raise AttributeError(f"module 'keras_reid.models' has no attribute {name!r}")
