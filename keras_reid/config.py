"""Config helpers shared by the entry points: resolve, validate, save, reload.

Configs are ml_collections ConfigDicts from `configs/*.py`, all on the one
schema of keras_reid.schema. They are locked and type-safe, so a mistyped
key or a value of the wrong type given on the command line fails with a
message naming the key.
"""

from __future__ import annotations

import json
import os

from ml_collections import config_dict

from keras_reid import losses as losses_lib
from keras_reid import config_ranges
from keras_reid import schema

CONFIG_FILE = "config.json"

# Stage keys renamed since runs were first written ("step" names the two
# fine-tuning steps, "iteration" an optimizer update): a config.json with the
# old name loads under the new one, so old runs still resume and evaluate.
RENAMED_STAGE_KEYS = {
    "step1_steps": "step1_iterations",
    "step2_steps": "step2_iterations",
    "lr_decay_steps": "lr_decay_iterations",
}

# Stage keys moved into a sub-dict of the stage since runs were first
# written: sub-dict -> its keys, which a config.json may hold at the stage
# level (the settings of unsupervised stages were stage keys until they were
# grouped under stage.unsupervised).
MOVED_STAGE_KEYS = {
    "unsupervised": ("rounds", "camera_a", "pseudo_labels", "soft_top_m",
                     "soft_temperature", "graph_k", "grdl_lambda",
                     "grdl_atoms", "grdl_iterations"),
}


def save_config(config: config_dict.ConfigDict, workdir: str) -> str:
  """Writes the resolved config into the run directory and returns the path."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, CONFIG_FILE)
  with open(path, "w") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=False))
  return path


def load_config(workdir: str) -> config_dict.ConfigDict:
  """Reads the config a training run wrote into `workdir`.

  A config.json written by an older keras_reid reads as today's schema:
  renamed or moved keys under their new names (`rename_old_keys`) and keys
  the schema gained since at their defaults (`add_new_defaults`), so an old
  run resumes and evaluates as it trained.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"No {CONFIG_FILE} in run directory {workdir!r}: expected the "
        "workdir of a `python -m keras_reid.train` run.")
  try:
    with open(path) as f:
      data = json.load(f)
  except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
    raise ValueError(
        f"{path} is not valid JSON ({e}); python -m keras_reid.train wrote "
        "it: restore it from a backup, or undo the edit.") from None
  if not isinstance(data, dict):
    raise ValueError(
        f"{path} holds a JSON {type(data).__name__}, not the config object "
        "python -m keras_reid.train writes: restore it from a backup, or "
        "undo the edit.")
  data = add_new_defaults(rename_old_keys(data))
  return config_dict.ConfigDict(data)


def add_new_defaults(data: dict) -> dict:
  """A config.json's dict with every key it lacks at keras_reid.schema's
  default (base_config() for the sections, stage_config() for each stage).

  Adds in place and returns `data`.
  """
  def fill(node: dict, defaults: dict) -> None:
    for key, value in defaults.items():
      if key not in node:
        node[key] = value
      elif isinstance(value, dict) and isinstance(node[key], dict):
        fill(node[key], value)

  fill(data, {k: v for k, v in schema.base_config().to_dict().items()
              if k != "stages"})
  stage_defaults = schema.stage_config().to_dict()
  for stage in (data.get("stages") or {}).values():
    fill(stage, stage_defaults)
  return data


def rename_old_keys(data: dict) -> dict:
  """A config.json's dict with old stage keys under their new names.

  RENAMED_STAGE_KEYS take their new names; MOVED_STAGE_KEYS at the stage
  level move into their sub-dict, which takes the place of the first of
  them. Changes in place (the other keys keep their order) and returns
  `data`.
  """
  for stage in (data.get("stages") or {}).values():
    for old, new in RENAMED_STAGE_KEYS.items():
      if old in stage and new not in stage:
        stage[new] = stage.pop(old)
    for group, keys in MOVED_STAGE_KEYS.items():
      flat = {k: stage[k] for k in keys if k in stage}
      if not flat:
        continue
      sub = stage.get(group, {})
      if not isinstance(sub, dict):
        raise ValueError(
            f"config.json stage key {group}={sub!r} next to the stage-level "
            f"keys {sorted(flat)}: expected {group} to be a dict of "
            f"{list(keys)}; remove one of them from the config.json.")
      items = list(stage.items())
      stage.clear()
      for key, value in items:
        if key in flat or key == group:
          # The sub-dict's own values win over stale stage-level copies.
          stage.setdefault(group, {**flat, **sub})
        else:
          stage[key] = value
  return data


def validate_config(config: config_dict.ConfigDict) -> None:
  """Checks the ranges a ConfigDict's type safety cannot.

  Every numeric key against keras_reid.config_ranges.RANGES (NaN, inf and
  out-of-range values are errors before anything trains).

  Names (backbone, datasets, dropout mode, distribution) are checked against
  the registries that define them by keras_reid.training.stages.check_config,
  which calls this first: config sits below every registry.

  Raises:
    ValueError: naming the key, the value and what was expected.
  """
  def expect(ok: bool, key: str, value, expected: str):
    if not ok:
      raise ValueError(f"config.{key}={value!r}: expected {expected}.")

  if "mixed_precision" in config.train:
    raise ValueError(
        f"config.train.mixed_precision={config.train.mixed_precision!r} was "
        "removed: use config.train.precision (\"auto\", \"float32\", "
        "\"mixed_bfloat16\" or \"mixed_float16\"), e.g. "
        "--config.train.precision=mixed_float16 for the old True.")
  expect(len(config.stages) > 0, "stages", dict(config.stages),
         "at least one stage (see keras_reid/schema.py stage_config)")
  config_ranges.check_ranges(flatten(config))
  _check_losses(config)
  if config.train.get("distinct_pairs") and config.train.jit_compile:
    raise ValueError(
        "config.train.distinct_pairs=True with config.train.jit_compile=True: "
        "the distinct pairs come from tf.unique, which XLA cannot compile; "
        "set --config.train.distinct_pairs=false or "
        "--config.train.jit_compile=false.")
  for name, stage in config.stages.items():
    _check_warmup(name, stage)
  _validate_model(config.model)


def _check_losses(config: config_dict.ConfigDict) -> None:
  """The losses that need another key (their own ranges are config_ranges').

  Raises:
    ValueError: naming both keys: the center loss without a positive
      center_lr; CIR re-scoring (eval.cir_topk > 0) without a verification
      head (none is built with loss.ver_weight=0); a loss on the embedding
      (acting on the base, so trained in step 2 only) in a config whose
      stages have no step 2.
  """
  loss = config.loss
  step2 = {name: stage.step2_iterations
           for name, stage in config.stages.items()}
  for term in losses_lib.LOSS_TERMS:
    weight = loss[term.weight_key]
    if (weight > 0 and term.acts_on == "base" and step2
        and not any(step2.values())):
      name = next(iter(step2))
      raise ValueError(
          f"config.loss.{term.weight_key}={weight} with "
          f"config.stages.{name}.step2_iterations=0 (and every other "
          f"stage's): the {term.name} loss trains the embedding, which only "
          "step 2 trains, so it would never act. Give a stage step 2 "
          f"iterations or set --config.loss.{term.weight_key}=0.")
  if loss.center_weight > 0 and not loss.center_lr > 0:
    raise ValueError(
        f"config.loss.center_weight={loss.center_weight} with "
        f"config.loss.center_lr={loss.center_lr!r}: the class centres would "
        "never move; set center_lr > 0 (0.5 in the bag of tricks).")
  if config.eval.cir_topk > 0 and not loss.ver_weight > 0:
    raise ValueError(
        f"config.eval.cir_topk={config.eval.cir_topk} with "
        f"config.loss.ver_weight={loss.ver_weight!r}: CIR re-scores with the "
        "verification head, which a model without the verification loss "
        "does not have; set --config.eval.cir_topk=0 or "
        "--config.loss.ver_weight > 0.")


def _check_warmup(name: str, stage: config_dict.ConfigDict) -> None:
  """A stage's warmup against its steps and its lr schedule (the keys' own
  ranges are config_ranges').

  Raises:
    ValueError: naming both keys of a combination that cannot work.
  """
  prefix = f"config.stages.{name}"
  for step in (1, 2):
    warmup = stage[f"step{step}_warmup_iterations"]
    iterations = stage[f"step{step}_iterations"]
    if warmup > iterations:
      raise ValueError(
          f"{prefix}.step{step}_warmup_iterations={warmup} is longer than "
          f"the step, {prefix}.step{step}_iterations={iterations}: the lr "
          f"would never reach step{step}_lr. Lower the warmup or raise the "
          "iterations.")
    if (warmup and stage.lr_schedule == "step"
        and warmup > stage.lr_decay_iterations):
      raise ValueError(
          f"{prefix}.step{step}_warmup_iterations={warmup} is longer than "
          f"{prefix}.lr_decay_iterations={stage.lr_decay_iterations} "
          "(lr_schedule='step'): the lr would decay before the warmup "
          "reaches it. Lower the warmup or raise lr_decay_iterations.")


def _validate_model(model: config_dict.ConfigDict) -> None:
  """The combinations of config.model's keys that cannot work (each key's
  own range is in config_ranges.RANGES).

  Raises:
    ValueError: naming both keys, their values and the fix.
  """
  if model.retrieval_feature == "bnneck" and not model.bnneck:
    raise ValueError(
        "config.model.retrieval_feature='bnneck' needs config.model.bnneck="
        "True (there is no BNNeck to retrieve after): set model.bnneck=True, "
        "or model.retrieval_feature='pooled'.")
  default = schema.base_config().model
  for key in ("gem_p", "gem_p_trainable"):
    if model.pooling != "gem" and model[key] != default[key]:
      raise ValueError(
          f"config.model.{key}={model[key]!r} has no effect with "
          f"config.model.pooling={model.pooling!r}: set model.pooling='gem', "
          f"or leave model.{key} at its default {default[key]!r}.")


# Fields that tell repetitions of one recipe apart (run_comparison averages
# over them): the seed and each stage's split.
REPETITION_FIELDS = ("seed", "split", "split_seed")


def flatten(config) -> dict:
  """{"model.backbone": "mobilenet_v1", "stages.viper.step2_lr": 0.005, ...}.

  Args:
    config: a ConfigDict or the nested dict of a config.json.

  Returns:
    dotted key -> leaf value, in the config's order.
  """
  out = {}

  def walk(prefix: str, node) -> None:
    for key, value in node.items():
      if hasattr(value, "items"):
        walk(f"{prefix}{key}.", value)
      else:
        out[f"{prefix}{key}"] = value
  walk("", config.to_dict() if hasattr(config, "to_dict") else config)
  return out


def base_fields() -> tuple[dict, dict]:
  """(flattened base_config(), flattened stage_config()) of keras_reid.schema.

  A stage's sub-dicts flatten to dotted keys: "unsupervised.grdl_lambda".
  """
  return flatten(schema.base_config()), flatten(schema.stage_config())


def differences(config, base: tuple[dict, dict] | None = None) -> dict:
  """The fields of `config` that differ from keras_reid.schema's defaults.

  Top-level fields are compared with base_config(), each stage's fields
  (stages.<name>.<key>, stages.<name>.unsupervised.<key>) with
  stage_config()'s (<key>, unsupervised.<key>); a field the base lacks
  counts as a difference.

  Args:
    config: a ConfigDict or a config.json's dict.
    base: base_fields()'s result (taken from keras_reid.schema when None).

  Returns:
    dotted key -> value, in the config's order.
  """
  top, stage = base if base is not None else base_fields()
  out = {}
  for key, value in flatten(config).items():
    parts = key.split(".")
    if parts[0] == "stages" and len(parts) >= 3:
      reference = stage.get(".".join(parts[2:]), _MISSING)
    else:
      reference = top.get(key, _MISSING)
    if reference is _MISSING or reference != value:
      out[key] = value
  return out


_MISSING = object()


# The choices `describe_run` names for every run, before its differences.
RUN_KEY_FIELDS = ("backbone", "datasets", "losses", "ver_dropout_mode",
                  "precision")


def describe_run(config, base: tuple[dict, dict] | None = None, *,
                 loss_table=losses_lib.LOSS_TERMS) -> dict:
  """What tells a run apart, flat: the differences plus the key choices.

  Args:
    config: a ConfigDict or a config.json's dict.
    base: see `differences`.
    loss_table: the losses (keras_reid.losses.LOSS_TERMS).

  Returns:
    {"backbone", "datasets" (stages' datasets joined by ">"), "losses"
    (the losses the config turns on, losses.active_names, joined by "+":
    cls, ver, aux, triplet), "ver_dropout_mode",
    "precision" (train.precision if the config has it, else from
    train.mixed_precision)} followed by `differences(config)`; values are
    bool, int, float or str (what TensorBoard's HParams take).
  """
  flat = flatten(config)
  stage_names = []
  for key in flat:
    parts = key.split(".")
    if parts[0] == "stages" and len(parts) >= 3 and parts[1] not in stage_names:
      stage_names.append(parts[1])
  losses = losses_lib.active_names(
      {k[len("loss."):]: v for k, v in flat.items() if k.startswith("loss.")},
      aux_heads=flat.get("model.aux_heads", False), table=loss_table)
  if "train.precision" in flat:
    precision = flat["train.precision"]
  else:
    precision = ("mixed_float16" if flat.get("train.mixed_precision")
                 else "float32")
  out = {
      "backbone": flat.get("model.backbone", ""),
      "datasets": ">".join(flat[f"stages.{n}.dataset"] for n in stage_names
                           if f"stages.{n}.dataset" in flat),
      "losses": "+".join(losses),
      "ver_dropout_mode": flat.get("model.ver_dropout_mode", ""),
      "precision": precision,
  }
  for key, value in differences(config, base).items():
    out[key] = value if isinstance(value, (bool, int, float, str)) else (
        json.dumps(value))
  return out


def is_unsupervised(stage) -> bool:
  """Whether a stage trains on pseudo labels instead of its identities.

  A config.json may predate the `supervision` key: such a stage is
  supervised.
  """
  return stage.get("supervision", "labels") != "labels"
