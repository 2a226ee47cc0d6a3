"""The bench scripts' statistics, against hand-computed values.

bench/reproduce.py --report_only: verdicts and dirty-run marks in the table,
from a hand-written runs file (no training): the verdicts must be the
paired t-interval ones of keras_reid.evaluation.paired, computed here by
hand. bench/cotraining_rounds.py: per-round mean +- sample SD over runs,
from hand-written run folders. Both run in subprocesses, as a user would.
"""

import json
import os
import subprocess
import sys

import pytest

from keras_reid import runs as runs_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(row, split, rank1, commit="abc1234", onednn=False, cpu="avx2"):
  return dict(row=row, split=split, commit=commit, rank1=rank1 / 100,
              rank5=0.5, rank10=0.6, rank20=0.7, mAP=0.3, seconds=10.0,
              onednn=onednn, cpu=cpu)


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


def test_pairs_across_kernels_or_cpu_kinds_are_marked(tmp_path):
  runs = [
      _run("direct_method", 0, 16.0),
      _run("direct_method", 1, 17.0),
      _run("direct_method", 2, 18.0, commit="647ad5f+dirty"),
      _run("direct_cls_only", 0, 10.0),  # same kernels, same CPU: no mark
      _run("direct_cls_only", 1, 10.0, onednn=True),  # other kernels
      _run("direct_cls_only", 2, 10.0, cpu="avx512_bf16"),  # other CPU
  ]
  lines = _report(tmp_path, runs)
  assert "| 0: +6.0, 1: +7.0\u2020, 2: +8.0*\u2020 |" in _line(
      lines, "| adding the verification loss helps")
  # The marks change no statistic: the verdict is the unmarked one.
  assert _line(lines, "| adding the verification loss helps").endswith(
      "| holds: difference +7.0 points, 95% CI [+4.52, +9.48] (paired over "
      "3 splits, SD 1.0) |")


def _write(path, value):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(value, f)


def test_cotraining_rounds_summary_is_mean_and_sample_sd(tmp_path):
  # Two runs, rounds 0-2 (round 2 = the final eval/<stage>.json).
  # Rank-1 %: run a 10, 12, 14; run b 12, 16, 14. By hand, per round:
  #   0: mean 11, sample SD sqrt((1 + 1) / 1) = 1.414 (population: 1.0);
  #   1: mean 14, SD sqrt((4 + 4) / 1) = 2.828;  2: mean 14, SD 0.
  # Label accuracy % (rounds 1, 2): a 30, 40; b 50, 40 -> 40 +- 14.1, 40 +- 0.
  run_dirs = []
  for name, rank1, accuracy in (("a", (10, 12, 14), (30, 40)),
                                ("b", (12, 16, 14), (50, 40))):
    workdir = str(tmp_path / name)
    for r in (0, 1):
      _write(runs_lib.round_eval_path(workdir, "target", r),
             {"rank1": rank1[r] / 100, "mAP": 0.2})
    _write(runs_lib.stage_eval_path(workdir, "target"),
           {"rank1": rank1[2] / 100, "mAP": 0.2})
    for r in (1, 2):
      _write(runs_lib.round_label_report_path(workdir, "target", r),
             {"accuracy": accuracy[r - 1] / 100, "soft_mass": 0.1})
    run_dirs.append(workdir)
  completed = subprocess.run(
      [sys.executable, os.path.join(REPO, "bench", "cotraining_rounds.py"),
       "--stage=target", *run_dirs],
      capture_output=True, text=True, timeout=120, check=False)
  assert completed.returncode == 0, completed.stderr
  lines = completed.stdout.splitlines()
  assert "| a | 1 | 30.0 (10.0) | 12.0 | 20.0 |" in lines
  summary = lines[lines.index("| round | runs | labels: accuracy % | Rank-1 % "
                              "| mAP % |") + 2:]
  assert summary == [
      "| 0 | 2 | - | 11.0 +- 1.4 | 20.0 +- 0.0 |",
      "| 1 | 2 | 40.0 +- 14.1 | 14.0 +- 2.8 | 20.0 +- 0.0 |",
      "| 2 | 2 | 40.0 +- 0.0 | 14.0 +- 0.0 | 20.0 +- 0.0 |",
  ]


# Run in a subprocess: bench/reproduce.py defines absl flags at import.
_POOL_CHECK = r"""
import json, sys
sys.path.insert(0, "bench")
import reproduce
from keras_reid import config as config_lib
workdir, = sys.argv[1:]
out = {}
for row in reproduce.ROWS:
  if row.pool_config:
    pool = reproduce.ROW_BY_NAME[row.pool]
    out[row.name] = reproduce.pool_differences(
        reproduce.configured(pool.config, pool.overrides),
        reproduce.configured(row.pool_config, row.overrides))
# strong_cpu_recipe without the 128x64 it pins: its pool no longer matches.
row = reproduce.ROW_BY_NAME["strong_cpu_recipe"]
unpinned = reproduce.dataclasses.replace(row, overrides=())
pool = reproduce.ROW_BY_NAME[row.pool]
config_lib.save_config(reproduce.configured(pool.config, pool.overrides),
                       workdir)
reproduce.check_pool_trained_as(workdir, row)  # the pool's own config: passes
try:
  reproduce.check_pool_trained_as(workdir, unpinned)
  out["unpinned_error"] = ""
except ValueError as error:
  out["unpinned_error"] = str(error)
print(json.dumps(out))
"""


def test_every_whole_config_row_names_a_pool_trained_as_its_config(tmp_path):
  # A staged row that stands for a config file (pool_config) reuses a pool
  # row's run: the pool row's config and overrides must train the file's
  # large stage with the row's overrides (e.g. the input size), or the
  # row's numbers are not the file's.
  completed = subprocess.run(
      [sys.executable, "-c", _POOL_CHECK, str(tmp_path / "pool")],
      capture_output=True, text=True, timeout=120, check=False, cwd=REPO,
      env=dict(os.environ, REID_DATA_ROOT=str(tmp_path / "data")))
  assert completed.returncode == 0, completed.stderr
  out = json.loads(completed.stdout.splitlines()[-1])
  unpinned_error = out.pop("unpinned_error")
  assert {"strong_cpu_recipe", "strong_cpu_recipe_224x112",
          "strong_cpu_recipe_extra_pool", "best_cpu_recipe"} <= set(out)
  assert out == {name: [] for name in out}
  # The check names each differing key with both values.
  assert "data.image_height: trained 128, config 224" in unpinned_error
  assert "data.image_width: trained 64, config 112" in unpinned_error


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
