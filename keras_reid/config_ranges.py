"""The valid range of every numeric config key, checked before training starts.

A value outside its range (a negative learning rate, a zero checkpoint
interval, NaN) would otherwise train wrongly and exit 0, or fail only after
hours of training. `check_ranges` names the key, the value and the range in
one line. Every int / float key of keras_reid.schema has an entry here; a new
key without one fails tests/config_test.py.

Keys are dotted paths as `keras_reid.config.flatten` writes them; a stage's
keys are written "stage.<key>" and apply to every stage.
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Range:
  """low <= value <= high (each end open when `*_open`); ints if `integer`."""
  low: float = -math.inf
  high: float = math.inf
  low_open: bool = False
  high_open: bool = False
  integer: bool = False
  why: str = ""

  def contains(self, value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      return False
    if not math.isfinite(value):
      return False
    if self.integer and value != int(value):
      return False
    above = value > self.low if self.low_open else value >= self.low
    below = value < self.high if self.high_open else value <= self.high
    return above and below

  def describe(self) -> str:
    def fmt(x):
      return str(int(x)) if self.integer or x == int(x) else f"{x:g}"
    kind = "an integer" if self.integer else "a finite number"
    if self.low == -math.inf and self.high == math.inf:
      bounds = ""
    elif self.high == math.inf:
      bounds = f" {'>' if self.low_open else '>='} {fmt(self.low)}"
    elif self.low == -math.inf:
      bounds = f" {'<' if self.high_open else '<='} {fmt(self.high)}"
    else:
      bounds = (f" in {'(' if self.low_open else '['}{fmt(self.low)}, "
                f"{fmt(self.high)}{')' if self.high_open else ']'}")
    return kind + bounds + (f" ({self.why})" if self.why else "")


def _int(low=0, high=math.inf, why=""):
  return Range(low, high, integer=True, why=why)


_POSITIVE = Range(0., low_open=True)
_NON_NEGATIVE = Range(0.)
_FRACTION = Range(0., 1.)
_PROBABILITY_OPEN = Range(0., 1., high_open=True)

RANGES: dict[str, Range] = {
    "seed": _int(0, 2**31 - 1, "seeds NumPy and TF"),
    "data.image_height": _int(1),
    "data.image_width": _int(1),
    "data.augment_copies": _int(1, why="1 = no augmentation"),
    "data.train_cache_mb": _int(0, why="0 = never cache"),
    "data.max_shift": _PROBABILITY_OPEN,
    "data.max_scale": _PROBABILITY_OPEN,
    "data.max_rotation_deg": Range(0., 180.),
    "data.random_erasing_prob": Range(0., 1., why="0 = off"),
    "data.eval_batch_size": _int(1),
    "data.synthetic_num_ids": _int(2, why="train and test identities"),
    "model.alpha": _POSITIVE,
    "model.cls_dropout": _PROBABILITY_OPEN,
    "model.ver_dropout": _PROBABILITY_OPEN,
    "model.gem_p": _POSITIVE,
    "model.last_stride": _int(1, 2, "2 as built, 1 = last downsampling at stride 1"),
    "loss.cls_weight": _NON_NEGATIVE,
    "loss.ver_weight": _NON_NEGATIVE,
    "loss.aux_weight": _NON_NEGATIVE,
    "loss.label_smoothing": _PROBABILITY_OPEN,
    "loss.triplet_weight": _NON_NEGATIVE,
    "loss.triplet_margin": _NON_NEGATIVE,
    "loss.center_weight": _NON_NEGATIVE,
    "loss.center_lr": _NON_NEGATIVE,
    "loss.cluster_memory_weight": _NON_NEGATIVE,
    "loss.cluster_memory_temperature": _POSITIVE,
    "train.momentum": _PROBABILITY_OPEN,
    "train.weight_decay": _NON_NEGATIVE,
    "train.checkpoint_every": _int(1),
    "train.log_every": _int(1),
    "train.max_checkpoints": _int(1),
    "eval.cir_topk": _int(0, why="0 = off"),
    "eval.max_rank": _int(1),
    "stage.split": _int(0),
    "stage.split_seed": _int(0),
    "stage.ids_per_batch": _int(2, why="negative pairs need two identities"),
    "stage.images_per_id": _int(2, why="positive pairs need two images"),
    "stage.step1_iterations": _int(0),
    "stage.step2_iterations": _int(0),
    "stage.step1_lr": _POSITIVE,
    "stage.step2_lr": _POSITIVE,
    "stage.lr_decay_iterations": _int(1),
    "stage.lr_decay_factor": Range(0., 1., low_open=True),
    "stage.step1_warmup_iterations": _int(0, why="0 = no warmup"),
    "stage.step2_warmup_iterations": _int(0, why="0 = no warmup"),
    "stage.warmup_start_factor": _FRACTION,
    "stage.eval_every": _int(0, why="0 = at the end"),
    "stage.unsupervised.rounds": _int(1),
    "stage.unsupervised.camera_a": _int(0),
    "stage.unsupervised.soft_top_m": _int(1),
    "stage.unsupervised.soft_temperature": _POSITIVE,
    "stage.unsupervised.graph_k": _int(1),
    "stage.unsupervised.grdl_lambda": _NON_NEGATIVE,
    "stage.unsupervised.grdl_atoms": _int(1),
    "stage.unsupervised.grdl_iterations": _int(1),
    "stage.unsupervised.cluster_eps": _POSITIVE,
    "stage.unsupervised.cluster_min_samples": _int(1, why="the image included"),
    "stage.unsupervised.cluster_k1": _int(1),
    "stage.unsupervised.cluster_k2": _int(1, why="1 = no query expansion"),
    "stage.unsupervised.cluster_camera_weight": Range(0., why="0 = off"),
    "stage.unsupervised.cluster_keep_fraction": Range(
        0., 1., low_open=True, why="1 = every mutual pair"),
    "stage.unsupervised.memory_momentum": _PROBABILITY_OPEN,
    "stage.unsupervised.source_identities": _int(
        0, why="0 = as many as the round's groups"),
}


def range_key(dotted: str) -> str:
  """"stages.viper.step2_lr" -> "stage.step2_lr"; other keys unchanged."""
  parts = dotted.split(".")
  if parts[0] == "stages" and len(parts) > 2:
    return ".".join(["stage"] + parts[2:])
  return dotted


def check_ranges(flat: dict) -> None:
  """Checks every numeric value of a flattened config against RANGES.

  Args:
    flat: `keras_reid.config.flatten(config)`.

  Raises:
    ValueError: one line naming the first key out of range, its value and
      the range.
  """
  for key, value in flat.items():
    valid = RANGES.get(range_key(key))
    if valid is None or isinstance(value, str):
      continue
    if not valid.contains(value):
      raise ValueError(
          f"config.{key}={value!r}: expected {valid.describe()}. Fix it in "
          f"the config file or with --config.{key}=VALUE.")
