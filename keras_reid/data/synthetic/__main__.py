"""Writes a synthetic pedestrian dataset (keras_reid.data.synthetic).

    python -m keras_reid.data.synthetic --out=DIR --num_ids=N --seed=S

prints, as one JSON line, the folder and its image counts.
"""

from __future__ import annotations

import json
import os

from absl import app
from absl import flags

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
_OVERWRITE = flags.DEFINE_boolean("overwrite", False,
                                  "Replace a dataset made with other flags.")


def main(argv: list[str]) -> None:
  del argv
  out = synthetic.generate(
      _OUT.value, num_ids=_NUM_IDS.value, seed=_SEED.value,
      domain=_DOMAIN.value, num_cameras=_NUM_CAMERAS.value,
      images_per_camera=_IMAGES_PER_CAMERA.value,
      image_size=(_HEIGHT.value, _WIDTH.value), overwrite=_OVERWRITE.value)
  counts = {sub: len(os.listdir(os.path.join(out, sub)))
            for sub in ("bounding_box_train", "bounding_box_test", "query")}
  print(json.dumps(dict(out=out, **counts)))


if __name__ == "__main__":
  flags.mark_flag_as_required("out")
  app.run(main)
