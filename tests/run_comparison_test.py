"""Tests for keras_reid.run_comparison and `python -m keras_reid.compare`."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from keras_reid import config as config_lib
from keras_reid import run_comparison
from keras_reid import default

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_run(folder, *, split=0, ver_weight=3.0, seed=0, rank1=0.5,
               metrics=True):
  config = default.get_config()
  config.stages.synthetic.split = split
  config.loss.ver_weight = ver_weight
  config.seed = seed
  config_lib.save_config(config, str(folder))
  if metrics:
    cmc = np.linspace(rank1, 1.0, 20)
    data = {"rank1": rank1, "rank5": float(cmc[4]), "rank10": float(cmc[9]),
            "rank20": float(cmc[19]), "mAP": rank1 - 0.1,
            "mINP": rank1 - 0.2, "cmc": cmc.tolist(),
            "train_seconds": 60.0 * (1 + split)}
    with open(os.path.join(folder, "metrics.json"), "w") as f:
      json.dump(data, f)
  return str(folder)


@pytest.fixture
def runs(tmp_path):
  return {
      "method_s0": _write_run(tmp_path / "method" / "split0", rank1=0.40),
      "method_s1": _write_run(tmp_path / "method" / "split1", split=1,
                              rank1=0.50),
      "method_s2": _write_run(tmp_path / "method" / "split2", split=2,
                              seed=3, rank1=0.66),
      "cls_s0": _write_run(tmp_path / "cls_only" / "split0", ver_weight=0.0,
                           rank1=0.30),
      "training": _write_run(tmp_path / "cls_only" / "split1", split=1,
                             ver_weight=0.0, metrics=False),
  }


def _metrics(path):
  with open(os.path.join(path, "metrics.json")) as f:
    return json.load(f)


def test_compare_rows_groups_and_shared_fields(runs, tmp_path):
  dirs = run_comparison.expand_run_dirs([str(tmp_path / "*" / "split*")])
  assert len(dirs) == 5
  c = run_comparison.compare(dirs)
  assert c.skipped == [{"path": runs["training"], "reason": "no metrics.json yet"}]
  assert c.columns == ["losses", "seed", "loss.ver_weight",
                       "stages.synthetic.split"]
  assert c.repetition_columns == ["seed", "stages.synthetic.split"]
  assert c.shared["backbone"] == "mobilenet_v1"
  assert c.shared["stages.synthetic.step2_iterations"] == 1000
  by_run = {r["run"]: r for r in c.rows}
  assert set(by_run) == {"cls_only/split0", "method/split0", "method/split1",
                         "method/split2"}
  assert by_run["cls_only/split0"]["fields"]["losses"] == "cls"
  assert by_run["method/split2"]["fields"]["seed"] == 3
  for row in c.rows:
    written = _metrics(row["path"])
    for key in ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP",
                "train_seconds"):
      assert row["metrics"][key] == written[key]
  # Mean and sample std (ddof=1) over the method's three splits.
  method = next(g for g in c.groups if g["n"] == 3)
  values = [_metrics(runs[k]) for k in ("method_s0", "method_s1",
                                        "method_s2")]
  for key in ("rank1", "mAP", "train_seconds"):
    assert method["mean"][key] == pytest.approx(
        np.mean([v[key] for v in values]))
    assert method["std"][key] == pytest.approx(
        np.std([v[key] for v in values], ddof=1))
  np.testing.assert_allclose(method["cmc"],
                             np.mean([v["cmc"] for v in values], 0))
  assert method["fields"] == {"losses": "cls+ver", "loss.ver_weight": 3.0}

  text = run_comparison.markdown(c)
  assert "| method/split1 | cls+ver | 0 | 3.0 | 1 | 50.0 |" in text
  rank1 = 100 * np.array([0.40, 0.50, 0.66])
  assert f"| cls+ver | 3.0 | 3 | {rank1.mean():.1f} ± {rank1.std(ddof=1):.1f} |" in text
  assert "Skipped: " in text and runs["training"] in text


def test_csv_and_plot(runs, tmp_path):
  c = run_comparison.compare([runs["method_s0"], runs["method_s1"],
                            runs["cls_s0"]])
  path = run_comparison.write_csv(c, str(tmp_path / "out" / "cmp.csv"))
  with open(path) as f:
    lines = list(csv.DictReader(f))
  assert [line["kind"] for line in lines] == ["run", "run", "run", "mean", "std"]
  for line, key in zip(lines, ("method_s0", "method_s1", "cls_s0")):
    written = _metrics(runs[key])
    assert float(line["rank1"]) == written["rank1"]
    assert float(line["mAP"]) == written["mAP"]
  assert float(lines[3]["rank1"]) == pytest.approx(0.45)
  # Rank-1 0.40 and 0.50: sample std |0.5 - 0.4| / sqrt(2).
  assert float(lines[4]["rank1"]) == pytest.approx(0.1 / 2 ** 0.5)
  png = run_comparison.plot_cmc(c, str(tmp_path / "cmc.png"))
  image = Image.open(png)
  assert image.size == (640, 440)


def test_errors_name_the_problem(tmp_path):
  with pytest.raises(ValueError, match="matches no directory"):
    run_comparison.expand_run_dirs([str(tmp_path / "nothing*")])
  only_training = _write_run(tmp_path / "a", metrics=False)
  with pytest.raises(ValueError, match="metrics.json"):
    run_comparison.compare([only_training])
  os.makedirs(tmp_path / "empty")
  with pytest.raises(FileNotFoundError, match="config.json"):
    run_comparison.compare([str(tmp_path / "empty")])


def test_command_prints_the_table_and_writes_files(runs, tmp_path):
  env = dict(os.environ,
             PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run(
      [sys.executable, "-m", "keras_reid.compare",
       str(tmp_path / "method" / "split*"), runs["cls_s0"],
       f"--csv={tmp_path / 'c.csv'}", f"--plot={tmp_path / 'c.png'}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  c = run_comparison.compare(
      run_comparison.expand_run_dirs([str(tmp_path / "method" / "split*"),
                                    runs["cls_s0"]]))
  assert proc.stdout.startswith(run_comparison.markdown(c))
  assert (tmp_path / "c.csv").exists() and (tmp_path / "c.png").exists()
  bad = subprocess.run([sys.executable, "-m", "keras_reid.compare",
                        str(tmp_path / "nothing")], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
  assert bad.returncode == 1 and "matches no directory" in bad.stderr
  assert "Traceback" not in bad.stderr


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
