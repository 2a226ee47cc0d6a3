"""Backbones, Re-ID layers and heads, model builders.

Import the submodules (`keras_reid.models.builders`, `.backbones`, `.layers`,
`.heads`, `.googlenet`; the backbone registry is `backbones.BACKBONES`). This
file imports nothing, so that the NumPy-only .pth reader
(`keras_reid.models.torch_state_dict`) loads without TensorFlow.
"""
