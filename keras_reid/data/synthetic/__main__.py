"""Writes a synthetic pedestrian dataset (keras_reid.data.synthetic).

    python -m keras_reid.data.synthetic --out=DIR --num_ids=N --seed=S

prints, as one JSON line, the folder and its image counts. A mistake (a flag
below its minimum, --out naming a file or a folder that is not a synthetic
dataset) is one line on stderr and exit status 1; --overwrite replaces only
a dataset this generator wrote.
"""

from __future__ import annotations

import json
import os

from absl import app
from absl import flags

# Before anything that imports TensorFlow, to quiet its start-up logs.
from keras_reid import quiet  # noqa: F401
from keras_reid import user_errors
from keras_reid.data.synthetic import generator as synthetic

_OUT = flags.DEFINE_string("out", None, "Dataset folder to write.")
_NUM_IDS = flags.DEFINE_integer("num_ids", 60, "Number of identities.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
_DOMAIN = flags.DEFINE_enum("domain", "a", list(synthetic.DOMAINS),
                            "Imaging style.")
_NUM_CAMERAS = flags.DEFINE_integer("num_cameras", None,
                                    "Cameras (default: the domain's).")
_IMAGES_PER_CAMERA = flags.DEFINE_integer(
    "images_per_camera", 4, "Images of an identity per camera it visits.")
_HEIGHT = flags.DEFINE_integer("height", 128, "Image height.")
_WIDTH = flags.DEFINE_integer("width", 64, "Image width.")
_OVERWRITE = flags.DEFINE_boolean(
    "overwrite", False, "Replace a synthetic dataset made with other flags "
    "(never a folder holding anything else).")


def _check_flags() -> None:
  """Raises ValueError naming the first flag the generator cannot use."""
  size = "the smallest image the renderer draws"
  minimums = [(_NUM_IDS, synthetic.MIN_IDS, "half train, half test ids"),
              (_IMAGES_PER_CAMERA, synthetic.MIN_IMAGES_PER_CAMERA,
               "a query and its gallery images"),
              (_HEIGHT, synthetic.MIN_IMAGE_SIZE[0], size),
              (_WIDTH, synthetic.MIN_IMAGE_SIZE[1], size)]
  if _NUM_CAMERAS.value is not None:
    minimums.append((_NUM_CAMERAS, synthetic.MIN_CAMERAS,
                     "a query needs a match in another camera"))
  for flag, minimum, why in minimums:
    if flag.value < minimum:
      raise ValueError(f"--{flag.name}={flag.value}: expected at least "
                       f"{minimum} ({why}).")
  path = os.path.abspath(_OUT.value)
  while not os.path.exists(path):  # the folder, or the first that exists
    path = os.path.dirname(path)
  if not os.path.isdir(path):
    raise ValueError(f"--out={_OUT.value}: {path} is a file, not a folder; "
                     "choose an empty or new folder.")


def main(argv: list[str]) -> None:
  del argv
  _check_flags()
  out = synthetic.generate(
      _OUT.value, num_ids=_NUM_IDS.value, seed=_SEED.value,
      domain=_DOMAIN.value, num_cameras=_NUM_CAMERAS.value,
      images_per_camera=_IMAGES_PER_CAMERA.value,
      image_size=(_HEIGHT.value, _WIDTH.value), overwrite=_OVERWRITE.value)
  counts = {sub: len(os.listdir(os.path.join(out, sub)))
            for sub in synthetic.SUBFOLDERS}
  print(json.dumps(dict(out=out, **counts)))


if __name__ == "__main__":
  flags.mark_flag_as_required("out")
  app.run(user_errors.one_line_errors(main))
