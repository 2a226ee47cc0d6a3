"""A stage's dataset from an experiment config (configs/*.py).

`load_stage_dataset(stage, config)` reads `config.stages.<name>`'s dataset:
its name(s), root(s), split and reader options; the synthetic set lives in
config.data.synthetic_dir and is generated there on first use. Training
(keras_reid.training.stages) and the evaluation of a finished run
(keras_reid.run_evaluation) both read datasets through here, so a run is
evaluated on exactly what it trained on.
"""

from __future__ import annotations

import os

from absl import logging
from ml_collections import config_dict

from keras_reid.data import datasets
from keras_reid.data import records as records_lib
from keras_reid.data import synthetic


def parse_options(text: str) -> dict:
  """Reader options written "key=value,key=value" (values: int, float, bool, str)."""
  options = {}
  for item in filter(None, (part.strip() for part in text.split(","))):
    key, sep, value = item.partition("=")
    if not sep:
      raise ValueError(f"Dataset option {item!r} in {text!r}: expected "
                       "key=value, e.g. \"protocol=new,kind=detected\".")
    for cast in (int, float):
      try:
        value = cast(value)
        break
      except ValueError:
        pass
    options[key.strip()] = {"true": True, "false": False}.get(value, value)
  return options


def parse_stage_options(text: str, names: list[str]) -> dict[str, dict]:
  """A stage's reader options per dataset.

  "key=value" goes to every dataset of the stage; "name:key=value" only to
  dataset `name`, e.g. "cuhk03:protocol=old,cuhk03:kind=labeled" for
  "market1501+cuhk03".

  Args:
    text: the stage's `options`.
    names: the stage's dataset names ("a+b" split on "+").

  Returns:
    {name: options dict} for every name in `names`.

  Raises:
    ValueError: an option names a dataset that is not in the stage.
  """
  out: dict[str, dict] = {name: {} for name in names}
  for item in filter(None, (part.strip() for part in text.split(","))):
    key = item.partition("=")[0]
    target, colon, _ = key.partition(":")
    if colon:
      target = target.strip()
      if target not in out:
        raise ValueError(
            f"Dataset option {item!r} in {text!r} names dataset {target!r}, "
            f"which is not in this stage ({'+'.join(names)}); prefix options "
            f"with one of {names}, or leave the prefix out to give an option "
            "to every dataset of the stage.")
      out[target].update(parse_options(item.partition(":")[2]))
    else:
      for options in out.values():
        options.update(parse_options(item))
  return out


def default_root(name: str, root: str, config: config_dict.ConfigDict) -> str:
  """`root`, or for the synthetic set config.data.synthetic_dir when empty."""
  if name == "synthetic" and not root:
    return config.data.synthetic_dir
  return root


def dataset_root(name: str, root: str, config: config_dict.ConfigDict) -> str:
  """The folder of one dataset; generates the synthetic set if absent."""
  root = default_root(name, root, config)
  if name == "synthetic":
    if not os.path.isdir(root):
      logging.info("Generating synthetic pedestrians into %s", root)
      print(f"Generating {config.data.synthetic_num_ids} synthetic identities "
            f"into {root} (once) ...", flush=True)
      synthetic.generate(root, num_ids=config.data.synthetic_num_ids,
                         seed=config.seed, domain=config.data.synthetic_domain)
    return root
  if not root:
    raise ValueError(
        f"Stage dataset {name!r} needs a folder: set "
        "--config.stages.<name>.root=DIR (see README.md, Datasets).")
  return root


def load_stage_dataset(stage: config_dict.ConfigDict,
                       config: config_dict.ConfigDict) -> records_lib.ReidDataset:
  """The stage's dataset; "a+b" with roots "A+B" pools their training sets."""
  names = stage.dataset.split("+")
  roots = stage.root.split("+") if stage.root else [""] * len(names)
  if len(roots) != len(names):
    raise ValueError(
        f"Stage dataset {stage.dataset!r} names {len(names)} dataset(s) but "
        f"root {stage.root!r} gives {len(roots)} folder(s); separate both "
        "with '+' in the same order.")
  options = parse_stage_options(stage.options, names)
  return records_lib.combine_for_training([
      datasets.load_dataset(name, dataset_root(name, root, config),
                            split=stage.split, split_seed=stage.split_seed,
                            **options[name])
      for name, root in zip(names, roots)])
