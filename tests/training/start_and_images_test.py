"""A run's start: wrong inputs fail before training and never block the workdir.

Covers: a failed start leaves no config.json that would refuse the corrected
command; every query / gallery image is checked before the first training
step; skip_corrupt skips them in evaluation too and the report lists them;
string pids of a manifest get their mapping written into the run.
"""

import json
import os

import numpy as np
from PIL import Image
import pytest

from keras_reid import config as config_lib
from keras_reid import runs
from keras_reid.data import image_files
from keras_reid.evaluation import ranking
from keras_reid.training import stages
from tests.training import tiny_config

COLOURS = {"ann": (200, 40, 40), "bob": (40, 200, 40), "cy": (40, 40, 200)}


def _manifest(folder, corrupt_query=False):
  """A manifest with string pids: 3 ids, train 4 images each, query/gallery."""
  rows = []
  rng = np.random.default_rng(0)
  for name, colour in COLOURS.items():
    for k in range(6):
      split, cam = (("train", k % 2) if k < 4 else
                    ("query", 0) if k == 4 else ("gallery", 1))
      path = os.path.join(folder, f"{name}_{k}.png")
      pixels = np.clip(np.array(colour) + rng.normal(0, 20, (64, 32, 3)), 0,
                       255).astype(np.uint8)
      Image.fromarray(pixels).save(path)
      rows.append(f"{os.path.basename(path)},{name},{cam},{split}")
  if corrupt_query:
    with open(os.path.join(folder, "broken.png"), "wb") as f:
      f.write(b"\x89PNG\r\n\x1a\n not really")
    rows.append("broken.png,ann,0,query")
  csv = os.path.join(folder, "manifest.csv")
  with open(csv, "w") as f:
    f.write("path,pid,camid,split\n" + "\n".join(rows) + "\n")
  return csv


def _config(root):
  config = tiny_config.get_config()
  config.stages.synthetic.update(dict(dataset="manifest", root=root,
                                      step1_iterations=1, step2_iterations=2))
  return config


@pytest.mark.slow
def test_failed_start_does_not_block_the_corrected_command(tmp_path):
  csv = _manifest(str(tmp_path))
  workdir = str(tmp_path / "run")
  with pytest.raises(FileNotFoundError, match="nowhere"):
    stages.train(_config(str(tmp_path / "nowhere")), workdir)
  assert not os.path.exists(os.path.join(workdir, config_lib.CONFIG_FILE))
  metrics = stages.train(_config(csv), workdir)  # same workdir, fixed root
  assert 0.0 <= metrics["rank1"] <= 1.0
  assert metrics["num_skipped_corrupt_images"] == 0
  assert config_lib.load_config(workdir).stages.synthetic.root == csv
  # The manifest's string pids: their numbering is part of the run.
  with open(os.path.join(workdir, "pid_names", "synthetic.json")) as f:
    assert json.load(f) == {"1": "ann", "2": "bob", "3": "cy"}
  # Once a step is checkpointed, a changed config is refused as before.
  with pytest.raises(ValueError, match="different config"):
    stages.train(_changed(csv), workdir)


def _changed(csv):
  config = _config(csv)
  config.train.momentum = 0.5
  return config


@pytest.mark.slow
def test_corrupt_query_found_before_training_or_skipped_and_listed(tmp_path):
  csv = _manifest(str(tmp_path), corrupt_query=True)
  broken = os.path.join(str(tmp_path), "broken.png")
  workdir = str(tmp_path / "run")
  with pytest.raises(image_files.CorruptImageError,
                     match=r"query: '.*broken\.png'"):
    stages.train(_config(csv), workdir)
  # Found before the first training step: nothing was trained.
  assert runs.Progress.load(workdir).finished == []
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))

  config = _config(csv)
  config.data.skip_corrupt = True
  metrics = stages.train(config, workdir)
  assert metrics["num_skipped_corrupt_images"] == 1
  with open(os.path.join(workdir, "eval", "synthetic.json")) as f:
    report = json.load(f)
  assert report["skipped_corrupt_images"]["query"] == [broken]
  assert report["skipped_corrupt_images"]["num_skipped"] == 1
  assert report["num_queries"] + report["num_skipped_queries"] == 3
  with open(os.path.join(workdir, "metrics.json")) as f:
    assert json.load(f)["num_skipped_corrupt_images"] == 1


def test_no_scorable_query_fails_before_training(tmp_path):
  csv = _manifest(str(tmp_path))
  # Every gallery image moved to the queries' camera: no query can match.
  text = open(csv).read().replace(",1,gallery", ",0,gallery")
  with open(csv, "w") as f:
    f.write(text)
  workdir = str(tmp_path / "run")
  with pytest.raises(ranking.NoValidQueryError,
                     match=r"stage 'synthetic' \(manifest\) cannot be "
                     r"evaluated: all 3 queries skipped.*3 are matched only "
                     r"by gallery images of their own camera"):
    stages.train(_config(csv), workdir)
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
