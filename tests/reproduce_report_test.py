"""bench/reproduce.py --report_only: verdicts and dirty-run marks in the table.

Runs the script in a subprocess on a hand-written runs file (no training):
the verdicts must be the paired t-interval ones of
keras_reid.evaluation.paired, computed here by hand.
"""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(row, split, rank1, commit="abc1234"):
  return dict(row=row, split=split, commit=commit, rank1=rank1 / 100,
              rank5=0.5, rank10=0.6, rank20=0.7, mAP=0.3, seconds=10.0)


def _report(tmp_path, runs):
  runs_json = tmp_path / "runs.json"
  runs_json.write_text(json.dumps(runs))
  results_md = tmp_path / "results.md"
  completed = subprocess.run(
      [sys.executable, os.path.join(REPO, "bench", "reproduce.py"),
       "--report_only", f"--results_json={runs_json}",
       f"--results_md={results_md}", f"--runs_dir={tmp_path / 'runs'}"],
      capture_output=True, text=True, timeout=120, check=False)
  assert completed.returncode == 0, completed.stderr
  return results_md.read_text().splitlines()


def _line(lines, start):
  (line,) = [x for x in lines if x.startswith(start)]
  return line


def test_verdicts_are_paired_t_intervals_and_dirty_runs_are_marked(tmp_path):
  runs = [
      # direct_method - imagenet_features per split: 1, 2, 3 points. By hand:
      # mean 2, sample SD 1, 95 % half-width 4.303 / sqrt(3) = 2.484, so
      # [-0.48, +4.48]: within noise. (2 x the population-SD standard error,
      # 0.94, called it "holds".)
      _run("direct_method", 0, 16.0, commit="647ad5f+dirty"),
      _run("direct_method", 1, 17.0),
      _run("direct_method", 2, 18.0),
      _run("imagenet_features", 0, 15.0),
      _run("imagenet_features", 1, 15.0),
      _run("imagenet_features", 2, 15.0),
      # direct_method - direct_cls_only: 6, 7, 8: mean 7, SD 1,
      # [4.52, 9.48]: holds.
      _run("direct_cls_only", 0, 10.0),
      _run("direct_cls_only", 1, 10.0),
      _run("direct_cls_only", 2, 10.0),
      # One pair only.
      _run("random_init_method", 0, 2.0),
  ]
  lines = _report(tmp_path, runs)
  assert _line(lines, "| Re-ID fine-tuning beats ImageNet features |").endswith(
      "| 0: +1.0*, 1: +2.0, 2: +3.0 | within noise: difference +2.0 points, "
      "95% CI [-0.48, +4.48] (paired over 3 splits, SD 1.0) |")
  assert _line(lines, "| adding the verification loss helps").endswith(
      "| holds: difference +7.0 points, 95% CI [+4.52, +9.48] (paired over "
      "3 splits, SD 1.0) |")
  assert _line(lines, "| ImageNet initialisation beats random").endswith(
      "| too few splits: difference +14.0 points (split 0 only) |")
  # Row table: mean +- sample SD (16, 17, 18: 17.0 +- 1.0), split 0 marked.
  row = _line(lines, "| direct_method |").split(" | ")
  assert row[3] == "0*,1,2"
  assert row[4] == "17.0 +- 1.0"
  assert _line(lines, "| random_init_method |").split(" | ")[4] == "2.0"
  # The runs file is written back with the same runs (sorted).
  assert json.loads((tmp_path / "runs.json").read_text()) == sorted(
      runs, key=lambda r: (r["row"], r["split"]))
