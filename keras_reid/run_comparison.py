"""Comparison of finished training runs: config differences and metrics.

`compare(run_dirs)` reads each run's config.json and metrics.json (written
by `python -m keras_reid.train`) and returns a `Comparison`:
  * `rows`: one per run: its name, the config fields in which the runs
    differ (from `config.describe_run`: backbone, datasets, losses, dropout
    mode, precision and every field changed from keras_reid.schema) and
    its metrics (fractions, as in metrics.json);
  * `groups`: runs that share every such field except the repetition fields
    (seed, each stage's split and split_seed) pooled: mean and sample
    std (ddof=1) of each metric over them, and the mean CMC curve;
  * `shared`: the fields every run has alike (printed once above the table).

`markdown`, `write_csv` and `plot_cmc` present it; `python -m
keras_reid.compare` is the command. TF-free: NumPy, matplotlib, Pillow.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import os
from typing import Any, Optional, Sequence

from absl import logging
import numpy as np

from keras_reid import config as config_lib
from keras_reid import runs
from keras_reid.evaluation import plots
from keras_reid.evaluation import ranking
from keras_reid.evaluation import visualize

# Metric columns, in order: the ranking metrics, CIR's when a run has them,
# and the training wall time.
CIR_KEYS = tuple(f"cir_{k}" for k in ranking.METRIC_KEYS)
TIME_KEY = "train_seconds"


@dataclasses.dataclass
class Comparison:
  """What `compare` returns (see the module docstring).

  Attributes:
    rows: per run {"run", "path", "fields": {field: value}, "metrics":
      {metric: fraction or seconds}, "cmc": list or None, "group": index}.
    groups: per distinct config {"fields", "runs" (names), "n", "mean",
      "std" ({metric: value}), "cmc" (mean curve or None), "cmc_std"}.
    columns: the config fields that differ between runs, in order.
    repetition_columns: those of them that are repetition fields.
    metric_keys: the metric columns present in any run.
    shared: {field: value} alike in every run.
    skipped: run directories left out (no metrics.json yet) with the reason.
  """
  rows: list[dict]
  groups: list[dict]
  columns: list[str]
  repetition_columns: list[str]
  metric_keys: list[str]
  shared: dict
  skipped: list[dict]


def expand_run_dirs(patterns: Sequence[str]) -> list[str]:
  """Run directories from paths and glob patterns, sorted, each once.

  Raises:
    ValueError: naming a pattern that matches no directory.
  """
  out: list[str] = []
  for pattern in patterns:
    matches = sorted(p for p in glob.glob(os.path.expanduser(pattern))
                     if os.path.isdir(p))
    if not matches:
      raise ValueError(f"{pattern!r} matches no directory: give run "
                       "directories of `python -m keras_reid.train` (or a "
                       "glob like 'runs/reproduce/*/split*').")
    out.extend(os.path.normpath(p) for p in matches
               if os.path.normpath(p) not in out)
  return out


def is_repetition_field(field: str) -> bool:
  """seed, stages.<name>.split and stages.<name>.split_seed."""
  return field.split(".")[-1] in config_lib.REPETITION_FIELDS and (
      field == "seed" or field.startswith("stages."))


def _run_names(paths: Sequence[str]) -> list[str]:
  """Paths relative to their common folder (the basename for one run)."""
  if len(paths) == 1:
    return [os.path.basename(os.path.abspath(paths[0]))]
  root = os.path.commonpath([os.path.abspath(p) for p in paths])
  return [os.path.relpath(os.path.abspath(p), root) for p in paths]


def _read_json(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e}); is the run's file "
                     "damaged?") from None


def compare(run_dirs: Sequence[str],
            base: Optional[tuple[dict, dict]] = None) -> Comparison:
  """Reads the runs and tabulates their differences and metrics.

  Args:
    run_dirs: run directories (see `expand_run_dirs` for globs). A directory
      without metrics.json (a run still training) is skipped and listed in
      `skipped`; one without config.json is an error.
    base: config.base_fields() to take differences against (keras_reid.schema's
      when None).

  Returns:
    A Comparison.

  Raises:
    ValueError: no run has a metrics.json, or a file cannot be read.
    FileNotFoundError: a directory without config.json.
  """
  base = base if base is not None else config_lib.base_fields()
  loaded, skipped = [], []
  for path in run_dirs:
    config_path = runs.config_path(path)
    if not os.path.exists(config_path):
      raise FileNotFoundError(
          f"No {runs.CONFIG_FILE} in run directory {path!r}: expected "
          "the workdir of a `python -m keras_reid.train` run.")
    # In its written order (load_config sorts).
    config = config_lib.rename_old_keys(_read_json(config_path))
    metrics = runs.read_metrics(path)
    if metrics is None:
      skipped.append({"path": path, "reason": f"no {runs.METRICS_FILE} yet"})
      logging.warning("Skipping %s: no %s yet (still training?).", path,
                      runs.METRICS_FILE)
      continue
    loaded.append((path, config, metrics))
  if not loaded:
    raise ValueError(f"none of {list(run_dirs)} has a {runs.METRICS_FILE}: "
                     "compare finished runs.")

  described = [config_lib.describe_run(c, base) for _, c, _ in loaded]
  flats = [config_lib.flatten(c) for _, c, _ in loaded]
  # In config order: describe_run's key choices, then the config's fields.
  order = {k: i for i, k in enumerate(dict.fromkeys(
      [*config_lib.RUN_KEY_FIELDS, *(k for f in flats for k in f)]))}
  fields = sorted(dict.fromkeys(k for d in described for k in d),
                  key=lambda k: order.get(k, len(order)))

  def value(i: int, field: str) -> Any:
    if field in described[i]:
      return described[i][field]
    return flats[i].get(field, "")

  columns, shared = [], {}
  for field in fields:
    values = [value(i, field) for i in range(len(loaded))]
    if len(loaded) > 1 and any(v != values[0] for v in values):
      columns.append(field)
    else:
      shared[field] = values[0]
  repetition = [c for c in columns if is_repetition_field(c)]
  metric_keys = [k for k in (*ranking.METRIC_KEYS, *CIR_KEYS, TIME_KEY)
                 if any(_metric(m, k) is not None for _, _, m in loaded)]

  rows, group_index = [], {}
  for i, ((path, _, metrics), name) in enumerate(
      zip(loaded, _run_names([p for p, _, _ in loaded]))):
    row_fields = {c: value(i, c) for c in columns}
    key = json.dumps([row_fields[c] for c in columns if c not in repetition])
    group = group_index.setdefault(key, len(group_index))
    rows.append({"run": name, "path": os.path.abspath(path),
                 "fields": row_fields,
                 "metrics": {k: _metric(metrics, k) for k in metric_keys},
                 "cmc": metrics.get("cmc"), "group": group})

  groups = []
  for index in sorted(group_index.values()):
    members = [r for r in rows if r["group"] == index]
    mean, std = {}, {}
    for k in metric_keys:
      values = [r["metrics"][k] for r in members
                if r["metrics"][k] is not None]
      if values:
        mean[k] = float(np.mean(values))
        # Sample std; one run has none (printed without a ± then).
        std[k] = (float(np.std(values, ddof=1)) if len(values) > 1
                  else float("nan"))
    curves = [r["cmc"] for r in members if r["cmc"]]
    length = min((len(c) for c in curves), default=0)
    stacked = np.array([c[:length] for c in curves], np.float64)
    groups.append({
        "fields": {c: members[0]["fields"][c] for c in columns
                   if c not in repetition},
        "runs": [r["run"] for r in members], "n": len(members),
        "mean": mean, "std": std,
        "cmc": stacked.mean(0).tolist() if length else None,
        "cmc_std": (stacked.std(0, ddof=1).tolist()
                    if length and len(curves) > 1 else None)})
  return Comparison(rows=rows, groups=groups, columns=columns,
                    repetition_columns=repetition, metric_keys=metric_keys,
                    shared=shared, skipped=skipped)


def _metric(metrics: dict, key: str) -> Optional[float]:
  if key.startswith("cir_"):
    value = metrics.get("cir", {}).get("cir", {}).get(key[len("cir_"):])
  else:
    value = metrics.get(key)
  return None if value is None else float(value)


def _format_metric(key: str, value: Optional[float],
                   std: Optional[float] = None) -> str:
  if value is None:
    return ""
  if key == TIME_KEY:  # minutes
    text = f"{value / 60:.1f}"
    return text + (f" ± {std / 60:.1f}" if std is not None else "")
  text = f"{100 * value:.1f}"
  return text + (f" ± {100 * std:.1f}" if std is not None else "")


def _metric_header(key: str) -> str:
  return "train min" if key == TIME_KEY else f"{key} %"


def _cell(value: Any) -> str:
  return str(value).replace("|", "\\|")


def markdown(comparison: Comparison) -> str:
  """The comparison as Markdown: shared fields, one row per run, and mean ±
  std (sample std, ddof=1) per config when some config has several runs."""
  c = comparison
  lines = []
  if c.shared:
    lines.append(f"Shared by all {len(c.rows)} runs: " + ", ".join(
        f"{k}={v}" for k, v in c.shared.items()))
    lines.append("")
  header = ["run", *c.columns, *map(_metric_header, c.metric_keys)]
  lines.append("| " + " | ".join(header) + " |")
  lines.append("|" + "---|" * len(header))
  for r in c.rows:
    cells = [r["run"], *(r["fields"][k] for k in c.columns),
             *(_format_metric(k, r["metrics"][k]) for k in c.metric_keys)]
    lines.append("| " + " | ".join(map(_cell, cells)) + " |")
  if any(g["n"] > 1 for g in c.groups):
    columns = [k for k in c.columns if k not in c.repetition_columns]
    lines += ["", "Mean ± std over runs that differ only in "
              + (", ".join(c.repetition_columns) or "nothing") + ":", ""]
    header = [*columns, "runs", *map(_metric_header, c.metric_keys)]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for g in c.groups:
      cells = [*(g["fields"][k] for k in columns), g["n"],
               *(_format_metric(k, g["mean"].get(k),
                                g["std"].get(k) if g["n"] > 1 else None)
                 for k in c.metric_keys)]
      lines.append("| " + " | ".join(map(_cell, cells)) + " |")
  if c.skipped:
    lines += ["", "Skipped: " + "; ".join(
        f"{s['path']} ({s['reason']})" for s in c.skipped)]
  return "\n".join(lines) + "\n"


def write_csv(comparison: Comparison, path: str) -> str:
  """One line per run ("kind" run) and, per config with several runs, its
  "mean" and "std" lines; metrics as fractions (train_seconds in seconds).
  Atomic."""
  c = comparison
  with runs.atomic_text_file(path, newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["kind", "run", "group", "n", *c.columns, *c.metric_keys])
    for r in c.rows:
      writer.writerow(["run", r["run"], r["group"], 1,
                       *(r["fields"][k] for k in c.columns),
                       *("" if r["metrics"][k] is None else r["metrics"][k]
                         for k in c.metric_keys)])
    for index, g in enumerate(c.groups):
      for kind in ("mean", "std") if g["n"] > 1 else ():
        writer.writerow([kind, " ".join(g["runs"]), index, g["n"],
                         *(g["fields"].get(k, "") for k in c.columns),
                         *(g[kind].get(k, "") for k in c.metric_keys)])
  return path


def _group_label(group: dict) -> str:
  """A run's name, or a config's differing fields and its number of runs."""
  if group["n"] == 1:
    return group["runs"][0]
  fields = ", ".join(f"{k.split('.')[-1]}={v}"
                     for k, v in group["fields"].items())
  return (fields or "all runs") + f", {group['n']} runs"


def plot_cmc(comparison: Comparison, path: str, *,
             title: str = "CMC") -> str:
  """The CMC curves on one figure, PNG at `path`: one curve per run, or per
  config (mean with a ± std band) when it has several runs."""
  curves, stds = [], []
  for g in comparison.groups:
    if g["cmc"] is None:
      continue
    curves.append((_group_label(g), g["cmc"]))
    stds.append(g["cmc_std"] if g["n"] > 1 else None)
  if not curves:
    raise ValueError("no run has a CMC curve (\"cmc\" in metrics.json).")
  return visualize.save_png(plots.cmc_figure(curves, title=title, stds=stds),
                            path)
