r"""Converts torchvision's GoogLeNet ImageNet weights to Keras, without PyTorch.

  python -m keras_reid.tools.convert_googlenet googlenet-1378be20.pth \
      ~/.keras/models/googlenet_imagenet_no_top.weights.h5 [--include_top]

The entry point only: the conversion is `keras_reid.tools.googlenet_conversion`
and the restricted .pth reader `keras_reid.models.torch_state_dict`.
"""

from __future__ import annotations

from absl import app
from absl import flags

# Before anything that imports TensorFlow, to quiet its start-up logs.
from keras_reid import quiet  # noqa: F401
from keras_reid.tools import googlenet_conversion

FLAGS = flags.FLAGS
flags.DEFINE_bool("include_top", False,
                  "Also convert the 1000-way ImageNet classifier 'fc' (the "
                  "backbone loader expects the file without it).")


def main(argv):
  if len(argv) != 3:
    raise app.UsageError("usage: python -m keras_reid.tools.convert_googlenet "
                         "SRC.pth DST.weights.h5 [--include_top]")
  try:
    unused = googlenet_conversion.convert_file(argv[1], argv[2],
                                               include_top=FLAGS.include_top)
  except (ValueError, FileNotFoundError) as e:
    raise app.UsageError(str(e)) from e
  print(f"Wrote {argv[2]}; unused state-dict entries: {len(unused)} "
        f"({', '.join(sorted({k.split('.')[0] for k in unused})) or 'none'}).")
  print("Preprocessing: feed images normalised to [-1, 1] (normalization "
        '"tf"); this equals torchvision\'s ImageNet mean/std input with '
        "transform_input=True.")


if __name__ == "__main__":
  app.run(main)
