"""Dataset readers: one small function per dataset, in the DATASETS registry.

Every reader takes the dataset's own folder (the one holding `cam_a/`,
`bounding_box_train/`, ...) or the folder above it where the archive unpacked
under its usual name, and returns a `ReidDataset` of (path, pid, camid)
records with the dataset's standard protocol. Random-split protocols draw
split `split` from a generator seeded by (split_seed, split), so the same
split comes back every time. camids are 0-based, -1 when unknown. Market-1501
style junk (pid -1) and distractors (pid 0) are kept in the test sets as they
are, for the evaluator to treat.

One module per layout family: market_style (Market-1501, DukeMTMC-reID,
MSMT17, synthetic), two_camera (VIPeR, PRID 2011, CUHK01), cuhk03 and
manifest (a user's own data; manifest_csv reads and checks its CSV);
common holds what they share (finding the folder, parsing file names, the
published counts).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Optional

from absl import logging
import numpy as np

from keras_reid.data.datasets import common
from keras_reid.data.datasets import cuhk03
from keras_reid.data.datasets import manifest
from keras_reid.data.datasets import market_style
from keras_reid.data.datasets import two_camera
from keras_reid.data.records import ReidDataset
from keras_reid.data.synthetic import generator as synthetic_generator

# The published size of each benchmark, which its reader checks.
PUBLISHED_COUNTS = common.PUBLISHED_COUNTS

DATASETS: dict[str, Callable[..., ReidDataset]] = {
    "market1501": market_style.market1501,
    "dukemtmcreid": market_style.dukemtmcreid,
    "msmt17": market_style.msmt17,
    "cuhk03": cuhk03.cuhk03,
    "viper": two_camera.viper,
    "prid2011": two_camera.prid2011,
    "cuhk01": two_camera.cuhk01,
    "manifest": manifest.manifest,
    "synthetic": market_style.synthetic,
}


# Readers whose **options go on to another function, whose signature then
# declares them (the synthetic set's generation settings).
_OPTIONS_GO_TO: dict[str, Callable[..., Any]] = {
    "synthetic": synthetic_generator.generate,
}
# Arguments of every reader that are not options: the folder and the split
# have their own flags and config keys.
_NOT_OPTIONS = ("root", "split", "split_seed", "out_dir")
# The types an option is checked and parsed as: its default's, else its
# annotation's when that is one of these.
_OPTION_TYPES = (bool, int, float, str)
_EXPECTED = {bool: "true or false (in any case)", int: "an integer",
             float: "a number", str: "a string"}


def _reader(name: str) -> Callable[..., ReidDataset]:
  if name not in DATASETS:
    raise ValueError(f"Unknown dataset {name!r}; expected one of "
                     f"{sorted(DATASETS)}.")
  return DATASETS[name]


def _options(name: str) -> dict[str, inspect.Parameter]:
  """The keyword parameters of `name`'s reader that are options."""
  out = {}
  for fn in (_reader(name), _OPTIONS_GO_TO.get(name)):
    if fn is None:
      continue
    for param in inspect.signature(fn, eval_str=True).parameters.values():
      if param.name not in _NOT_OPTIONS and param.kind in (
          param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD):
        out[param.name] = param
  return out


def _type(param: inspect.Parameter) -> Optional[type]:
  if type(param.default) in _OPTION_TYPES:
    return type(param.default)
  return param.annotation if param.annotation in _OPTION_TYPES else None


def reader_options(name: str) -> dict[str, Optional[type]]:
  """The options of dataset `name`'s reader and their types.

  Read from the reader's signature (and, for a reader passing **options
  on, the signature it passes them to): every keyword argument but the
  folder and the split, typed by its default (e.g. allow_incomplete=False:
  bool) or else its annotation; None where neither is bool / int / float /
  str.

  Raises:
    ValueError: unknown dataset.
  """
  return {key: _type(param) for key, param in _options(name).items()}


def _option_type(name: str, key: str) -> Optional[type]:
  """The type of option `key` of `name` (None: any); refuses unknown keys."""
  options = reader_options(name)
  if key in options:
    return options[key]
  if key in ("split", "split_seed"):
    raise ValueError(
        f"Dataset option {key!r} of {name}: the split is not a reader "
        f"option; give it with --{key} (config: stages.<stage>.{key}).")
  raise ValueError(
      f"Dataset option {key!r} is not an option of the {name} reader; its "
      f"options are {sorted(options) or 'none'}.")


def _wrong_type(name: str, key: str, value: Any, expected: type) -> ValueError:
  default = _options(name)[key].default
  if expected is bool:
    example = "true"
  elif isinstance(default, expected) and not isinstance(default, bool):
    example = str(default)
  else:
    example = {int: "3", float: "0.5", str: "text"}[expected]
  return ValueError(f"Dataset option {key}={value!r} of {name}: expected "
                    f"{_EXPECTED[expected]}, e.g. {key}={example}.")


def _bool(text: str) -> Optional[bool]:
  return {"true": True, "false": False}.get(text.strip().lower())


def parse_option(name: Optional[str], key: str, text: str) -> Any:
  """The value of reader option `key` of dataset `name` written as `text`.

  Parsed as the reader declares it: a bool option takes true or false in
  any case and nothing else ("1", "yes", "no" are refused, not read as
  truthy strings); an int option an integer; a float option a number; a
  str option any text. An option of no such type, or any option when
  `name` is None: an int, a float, true / false in any case, or else the
  text.

  Raises:
    ValueError: unknown dataset or option (naming the valid ones), or a
      value of another type (naming the option, the value and what it
      takes).
  """
  expected = _option_type(name, key) if name is not None else None
  if expected is None:
    for cast in (int, float):
      try:
        return cast(text)
      except ValueError:
        pass
    value = _bool(text)
    return text if value is None else value
  if expected is str:
    return text
  if expected is bool:
    value = _bool(text)
    if value is None:
      raise _wrong_type(name, key, text, bool)
    return value
  try:
    return expected(text)
  except ValueError:
    raise _wrong_type(name, key, text, expected) from None


def check_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
  """`options` checked against the reader of dataset `name`.

  Returns:
    The options, ints given to float options as floats.

  Raises:
    ValueError: as `parse_option`, for values already typed (bool options
      take bools only: the string "False" would be truthy).
  """
  out = {}
  for key, value in options.items():
    expected = _option_type(name, key)
    if expected is None:
      out[key] = value
      continue
    is_bool = isinstance(value, (bool, np.bool_))
    is_int = isinstance(value, (int, np.integer)) and not is_bool
    ok = {bool: is_bool, int: is_int, str: isinstance(value, str),
          float: is_int or (isinstance(value, (float, np.floating)))}[expected]
    if not ok:
      raise _wrong_type(name, key, value, expected)
    out[key] = float(value) if expected is float else value
  return out


def load_dataset(name: str, root: str, *, split: int = 0, split_seed: int = 0,
                 **options) -> ReidDataset:
  """Reads dataset `name` from `root` with its standard protocol.

  Args:
    name: a key of DATASETS.
    root: the dataset folder or the folder above it.
    split: split index for repeated random-split protocols.
    split_seed: seed drawing the random splits.
    **options: reader-specific options (e.g. cuhk03 protocol / kind),
      checked against the reader's signature (`check_options`).

  Returns:
    ReidDataset.

  Raises:
    ValueError: unknown dataset, unknown option or an option of the wrong
      type (besides the reader's own errors).
  """
  reader = _reader(name)
  options = check_options(name, options)
  ds = reader(root, split=split, split_seed=split_seed, **options)
  logging.info("Loaded %s from %s: %s", name, root, ds.summary())
  return ds
