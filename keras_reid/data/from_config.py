"""A stage's dataset from an experiment config (configs/*.py).

`load_stage_dataset(stage, config)` reads `config.stages.<name>`'s dataset:
its name(s), root(s), split and reader options; the synthetic set lives in
config.data.synthetic_dir (or the stage's root) and is generated there on
first use (a stage's options domain= / num_ids= override config.data's). Training
(keras_reid.training.stages) and the evaluation of a finished run
(keras_reid.run_evaluation) both read datasets through here, so a run is
evaluated on exactly what it trained on.
"""

from __future__ import annotations

import json
import os

from ml_collections import config_dict

from keras_reid.data import datasets
from keras_reid.data import records as records_lib
from keras_reid.data.synthetic import generator as synthetic


# The environment variable the experiment configs (configs/*.py) build their
# dataset and weights paths from.
DATA_ROOT_ENV = "REID_DATA_ROOT"


def data_root_hint() -> str:
  """How to point a config at the datasets, with REID_DATA_ROOT's value."""
  value = os.environ.get(DATA_ROOT_ENV)
  now = f"it is {value!r}" if value else "it is unset"
  return (f"set {DATA_ROOT_ENV} to the folder holding the datasets ({now}; "
          "the configs in configs/ read their dataset folders below it), or "
          "--config.stages.<name>.root=DIR (see README.md, Datasets).")


def parse_options(text: str, dataset: str | None = None) -> dict:
  """Reader options written "key=value,key=value".

  Booleans are true and false in any case and nothing else: "1", "yes" or
  "no" are not booleans (as strings they would all be truthy).

  Args:
    text: the options.
    dataset: the reader they are for (a key of datasets.DATASETS): each
      value is then parsed as the reader declares the option
      (`datasets.parse_option`: bool, int, float or str), and an unknown
      option or a value of another type is an error. Without it: int,
      float, bool or else str (checked when the reader is called,
      `datasets.load_dataset`).

  Returns:
    {option: value}.

  Raises:
    ValueError: an item without "=", or (with `dataset`) an unknown
      option or a value of the wrong type, naming the option, the value and
      what it takes.
  """
  options = {}
  for item in filter(None, (part.strip() for part in text.split(","))):
    key, sep, value = item.partition("=")
    if not sep:
      raise ValueError(f"Dataset option {item!r} in {text!r}: expected "
                       "key=value, e.g. \"protocol=new,kind=detected\".")
    key, value = key.strip(), value.strip()
    options[key] = datasets.parse_option(dataset, key, value)
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
    ValueError: an option names a dataset that is not in the stage, or is
      not an option of (or has the wrong type for) a dataset it goes to
      (`parse_options`).
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
      out[target].update(parse_options(item.partition(":")[2], target))
    else:
      for name, options in out.items():
        try:
          options.update(parse_options(item, name))
        except ValueError as e:
          having = [n for n in names
                    if key.strip() in datasets.reader_options(n)]
          if not having or key.strip() in datasets.reader_options(name):
            raise
          raise ValueError(
              f"{e} An option without a dataset prefix goes to every dataset "
              f"of the stage ({'+'.join(names)}): write {having[0]}:{item} "
              f"to give it to {having[0]} only.") from None
  return out


def default_root(name: str, root: str, config: config_dict.ConfigDict) -> str:
  """`root`, or for the synthetic set config.data.synthetic_dir when empty."""
  if name == "synthetic" and not root:
    return config.data.synthetic_dir
  return root


def ensure_synthetic(root: str, config: config_dict.ConfigDict, *,
                     domain: str | None = None,
                     num_ids: int | None = None) -> None:
  """Makes `root` hold the synthetic set that config asks for.

  The set is a function of data.synthetic_num_ids, data.synthetic_domain and
  seed (`domain` / `num_ids`, a stage's options, replace the first two),
  recorded in the folder's synthetic.META_FILE when generated. A
  folder generated with other values is regenerated in place (it is derived
  data); an empty or absent folder is generated; a folder holding other
  files without that metadata is left alone and refused.

  Raises:
    ValueError: `root` holds files but no synthetic metadata (names the
      folder and the fix).
  """
  wanted = dict(
      num_ids=int(config.data.synthetic_num_ids if num_ids is None
                  else num_ids),
      seed=int(config.seed),
      domain=config.data.synthetic_domain if domain is None else domain)
  meta_path = os.path.join(root, synthetic.META_FILE)
  if os.path.exists(meta_path):
    with open(meta_path) as f:
      held = json.load(f)
    differ = {k: (held.get(k), v) for k, v in wanted.items()
              if held.get(k) != v}
    if differ:
      print(f"Regenerating the synthetic set in {root}: it was generated with "
            + ", ".join(f"{k}={old!r}" for k, (old, _) in differ.items())
            + ", the config asks "
            + ", ".join(f"{k}={new!r}" for k, (_, new) in differ.items())
            + " ...", flush=True)
    # overwrite: the folder is a generated set (it has the metadata); same
    # parameters reuse it as it is.
    synthetic.generate(root, overwrite=True, **wanted)
    return
  if os.path.isdir(root) and os.listdir(root):
    raise ValueError(
        f"data.synthetic_dir={root!r} holds files but no {synthetic.META_FILE}"
        ", so it is not (or predates) a synthetic set generated for a "
        "config; it is left untouched. Delete the folder to generate it "
        "there, or set --config.data.synthetic_dir to a new folder.")
  print(f"Generating {wanted['num_ids']} synthetic identities into {root} "
        "(once) ...", flush=True)
  synthetic.generate(root, **wanted)


# Stage options of the synthetic set that choose what is generated (passed
# to `ensure_synthetic`, not to the reader), e.g. options="domain=b,
# num_ids=40" with its own root for a second domain in the same run.
SYNTHETIC_GENERATE_OPTIONS = ("domain", "num_ids")


def dataset_root(name: str, root: str, config: config_dict.ConfigDict,
                 **synthetic_options) -> str:
  """The folder of one dataset; generates the synthetic set (see
  `ensure_synthetic`, with `synthetic_options` domain / num_ids) when absent
  or generated with other settings."""
  root = default_root(name, root, config)
  if name == "synthetic":
    ensure_synthetic(root, config, **synthetic_options)
    return root
  if not root:
    raise ValueError(
        f"Stage dataset {name!r} needs a folder and the stage's root is "
        f"empty: {data_root_hint()}")
  return root


def _load_from_root(name: str, root: str, **kwargs) -> records_lib.ReidDataset:
  """datasets.load_dataset; a root that does not exist also says how the
  config finds its datasets (most often REID_DATA_ROOT is unset)."""
  try:
    return datasets.load_dataset(name, root, **kwargs)
  except FileNotFoundError as e:
    if os.path.exists(root):
      raise
    raise FileNotFoundError(
        f"{e} The folder {os.path.abspath(root)!r} does not exist: "
        f"{data_root_hint()}") from e


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
  generate = {name: {key: options[name].pop(key)
                     for key in SYNTHETIC_GENERATE_OPTIONS
                     if name == "synthetic" and key in options[name]}
              for name in names}
  return records_lib.combine_for_training([
      _load_from_root(name,
                      dataset_root(name, root, config, **generate[name]),
                      split=stage.split, split_seed=stage.split_seed,
                      **options[name])
      for name, root in zip(names, roots)])


def check_test_images_not_trained(
    stage_datasets: dict[str, records_lib.ReidDataset]) -> None:
  """Refuses a run whose evaluated images are trained on in a stage up to it.

  A repeated-split set (VIPeR, PRID 2011, CUHK01) pooled into an earlier
  stage with another split than the stage that evaluates it, e.g. a large
  stage "viper+manifest" at split 0 before a VIPeR stage at split 3, trains
  on split 3's test identities: its numbers would be meaningless.

  Args:
    stage_datasets: each stage's dataset, in the order the stages run.

  Raises:
    ValueError: names the two stages, how many images they share and one of
      them, and the fix (the same split and split_seed in both stages).
  """
  trained: dict[str, str] = {}  # real path -> the first stage training it
  for name, dataset in stage_datasets.items():
    for record in dataset.train:
      trained.setdefault(os.path.realpath(record.path), name)
    shared = [r.path for r in dataset.query + dataset.gallery
              if os.path.realpath(r.path) in trained]
    if shared:
      first = trained[os.path.realpath(shared[0])]
      raise ValueError(
          f"stage {name!r} evaluates on {len(shared)} image(s) that stage "
          f"{first!r} trains on (e.g. {shared[0]!r}): its test identities "
          "would be in the training data. Give both stages the same split "
          f"and split_seed (--config.stages.{first}.split=K for "
          f"--config.stages.{name}.split=K), or drop that dataset from stage "
          f"{first!r}.")
