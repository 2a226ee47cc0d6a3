"""Per-round table of unsupervised runs (self-training / co-training).

    python bench/cotraining_rounds.py --stage=target RUN_DIR [RUN_DIR ...]

Reads what `keras_reid.train` wrote for an unsupervised stage:
eval/<stage>/round<r>.json (the model before round r + 1; round 0 = direct
transfer), eval/<stage>.json (after the last round) and
cotrain/<stage>/round<r>.json (pseudo-label accuracy of round r's labels
against the hidden identities), and prints one markdown row per round:
Rank-1 and mAP of the model after that round, and the accuracy of the labels
it was trained on; with two or more runs (e.g. one per split) also each
round's mean +- sample SD (ddof=1) over the runs that reached it. TF-free.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_reid import runs  # noqa: E402
from keras_reid.evaluation import paired  # noqa: E402


def _read(path: str) -> dict | None:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def rounds(workdir: str, stage: str) -> list[dict]:
  """[{round, rank1, mAP, label_accuracy, soft_mass}] (percent), round 0 first.

  Round r's metrics are those of the model after r rounds; its labels are
  the ones it was fine-tuned on (none for round 0).
  """
  out = []
  r = 0
  while True:
    metrics = _read(runs.round_eval_path(workdir, stage, r))
    labels = _read(runs.round_label_report_path(workdir, stage, r))
    if metrics is None:
      if labels is None:
        break
      metrics = _read(runs.stage_eval_path(workdir, stage))
    out.append(dict(
        round=r,
        rank1=None if metrics is None else 100 * metrics["rank1"],
        mAP=None if metrics is None else 100 * metrics["mAP"],
        label_accuracy=None if labels is None else 100 * labels["accuracy"],
        soft_mass=None if labels is None else 100 * labels["soft_mass"]))
    r += 1
  return out


def summary(per_run: list[list[dict]]) -> list[dict]:
  """Each round's mean and sample SD over runs.

  Args:
    per_run: `rounds(...)` of each run.

  Returns:
    [{round, n (runs with that round), rank1, mAP, label_accuracy}], each
    metric (mean, sample SD) over the runs that have it, None when none
    has it (the SD is nan for one run).
  """
  out = []
  for r in range(max((len(rows) for rows in per_run), default=0)):
    have = [rows[r] for rows in per_run if len(rows) > r]
    row = dict(round=r, n=len(have))
    for key in ("rank1", "mAP", "label_accuracy"):
      values = [x[key] for x in have if x[key] is not None]
      row[key] = paired.mean_sd(values) if values else None
    out.append(row)
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("runs", nargs="+", help="run directories")
  parser.add_argument("--stage", default="target",
                      help="the unsupervised stage's name")
  args = parser.parse_args()

  def fmt(value):
    return "-" if value is None else f"{value:.1f}"
  print("| run | round | labels: accuracy % (soft mass %) | Rank-1 % | mAP % |")
  print("|---|---|---|---|---|")
  for run in args.runs:
    for row in rounds(run, args.stage):
      labels = ("- (direct transfer)" if row["label_accuracy"] is None else
                f"{fmt(row['label_accuracy'])} ({fmt(row['soft_mass'])})")
      print(f"| {os.path.basename(os.path.normpath(run))} | {row['round']} | "
            f"{labels} | {fmt(row['rank1'])} | {fmt(row['mAP'])} |")
  if len(args.runs) < 2:
    return

  def fmt_sd(value):
    if value is None:
      return "-"
    mean, sd = value
    return f"{mean:.1f}" if sd != sd else f"{mean:.1f} +- {sd:.1f}"  # nan: 1 run
  print("\nMean +- sample SD over the runs:\n")
  print("| round | runs | labels: accuracy % | Rank-1 % | mAP % |")
  print("|---|---|---|---|---|")
  for row in summary([rounds(run, args.stage) for run in args.runs]):
    print(f"| {row['round']} | {row['n']} | {fmt_sd(row['label_accuracy'])} | "
          f"{fmt_sd(row['rank1'])} | {fmt_sd(row['mAP'])} |")


if __name__ == "__main__":
  main()
