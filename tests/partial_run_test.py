"""Partial runs are reported as such; damaged inputs give one-line errors.

A run whose last finished step is not its config's last one is exported and
evaluated with a warning, and export_info.json / the report say which stage
and step the weights come from. A damaged or foreign progress.json and a
features file that is not an .npz name the file and what to do, and the
entry points print them as one line (the traceback with --verbosity=1).
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from keras_reid import config as config_lib
from keras_reid import run_evaluation
from keras_reid import runs
from keras_reid.evaluation import feature_files
from keras_reid.serving import saved_model
from keras_reid.training import stages
from tests.training import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.slow


def _config(base):
  config = tiny_config.get_config()
  config.data.synthetic_dir = os.path.join(base, "synthetic")
  config.stages.synthetic.update(dict(step1_iterations=1, step2_iterations=1))
  return config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  base = str(tmp_path_factory.mktemp("partial"))
  workdir = os.path.join(base, "run")
  stages.train(_config(base), workdir)
  return workdir


def _partial_copy(workdir, dest):
  """The run as if killed after step 1: step 2 not in progress.json."""
  shutil.copytree(workdir, dest)
  path = os.path.join(dest, runs.PROGRESS_FILE)
  with open(path) as f:
    data = json.load(f)
  data["finished"] = data["finished"][:1]
  with open(path, "w") as f:
    json.dump(data, f)
  return dest


def _run(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
             PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


def test_complete_run_says_so(run, tmp_path):
  origin = runs.weights_origin(run)
  assert origin == {"stage": "synthetic", "step": 2, "complete": True,
                    "finished": ["synthetic/step1", "synthetic/step2"],
                    "config_ends_at": "synthetic/step2"}
  path = saved_model.export_run(run, str(tmp_path / "export"))
  with open(os.path.join(path, saved_model.EXPORT_INFO_FILE)) as f:
    assert json.load(f)["weights_from"]["complete"] is True


def test_partial_run_warns_and_records_its_stage_and_step(run, tmp_path,
                                                          caplog):
  partial = _partial_copy(run, str(tmp_path / "partial"))
  path = saved_model.export_run(partial, str(tmp_path / "export"))
  with open(os.path.join(path, saved_model.EXPORT_INFO_FILE)) as f:
    origin = json.load(f)["weights_from"]
  assert (origin["stage"], origin["step"], origin["complete"]) == (
      "synthetic", 1, False)
  assert origin["config_ends_at"] == "synthetic/step2"
  assert any("is partial" in r.getMessage() and "step 1" in r.getMessage()
             for r in caplog.records)
  out = str(tmp_path / "eval.json")
  run_evaluation.evaluate_run(partial, output_json=out, pictures=False,
                              verification=False)
  with open(out) as f:
    report = json.load(f)
  assert report["weights_from"]["step"] == 1
  assert report["weights_from"]["complete"] is False


def test_run_written_with_the_old_key_names_still_reads_and_resumes(run,
                                                                   tmp_path):
  """progress.json "phase" and config.json "step1_steps" etc. (before the
  rename to step / iterations) load under the new names."""
  old = str(tmp_path / "old")
  shutil.copytree(run, old)
  path = os.path.join(old, runs.PROGRESS_FILE)
  with open(path) as f:
    progress = json.load(f)
  for item in progress["finished"]:
    item["phase"] = item.pop("step")
  with open(path, "w") as f:
    json.dump(progress, f)
  path = os.path.join(old, "config.json")
  with open(path) as f:
    text = f.read()
  for old_key, new_key in config_lib.RENAMED_STAGE_KEYS.items():
    assert f'"{new_key}"' in text
    text = text.replace(f'"{new_key}"', f'"{old_key}"')
  # And without a key the schema gained later (its default today).
  data = json.loads(text)
  del data["eval"]["flip_test"]
  with open(path, "w") as f:
    json.dump(data, f)

  assert runs.weights_origin(old) == runs.weights_origin(run)
  assert config_lib.load_config(old).to_dict()["stages"] == (
      config_lib.load_config(run).to_dict()["stages"])
  # Resuming with today's config is not refused as "a different config";
  # both steps count as finished, so nothing retrains.
  before = os.listdir(os.path.join(old, "checkpoints", "synthetic", "step2"))
  stages.train(_config(os.path.dirname(run)), old)
  assert os.listdir(os.path.join(
      old, "checkpoints", "synthetic", "step2")) == before
  with open(os.path.join(old, runs.PROGRESS_FILE)) as f:
    assert [(p["stage"], p["phase"]) for p in json.load(f)["finished"]] == [
        ("synthetic", 1), ("synthetic", 2)]


def test_a_key_added_to_the_schema_later_counts_only_off_its_default(
    run, tmp_path):
  old = str(tmp_path / "old")
  shutil.copytree(run, old)
  path = os.path.join(old, "config.json")
  with open(path) as f:
    data = json.load(f)
  del data["eval"]["flip_test"]
  del data["stages"]["synthetic"]["step1_trains"]
  with open(path, "w") as f:
    json.dump(data, f)
  loaded = config_lib.load_config(old)  # today's defaults fill the gaps
  assert loaded.eval.flip_test is False
  assert loaded.stages.synthetic.step1_trains == "new_layers"
  config = _config(os.path.dirname(run))
  stages._check_same_config(config, old)  # accepted: both at their defaults
  config.eval.flip_test = True
  with pytest.raises(ValueError, match=r"different config.*'eval'"):
    stages._check_same_config(config, old)
  config.eval.flip_test = False
  config.stages.synthetic.step1_trains = "classifiers"
  with pytest.raises(ValueError, match=r"different config.*'stages'"):
    stages._check_same_config(config, old)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]",
                                     '{"finished": [{"stage": 3}]}'])
def test_damaged_progress_names_the_file(run, tmp_path, content):
  broken = str(tmp_path / "broken")
  shutil.copytree(run, broken)
  path = os.path.join(broken, runs.PROGRESS_FILE)
  with open(path, "w") as f:
    f.write(content)
  with pytest.raises(ValueError, match=r"progress\.json is damaged or not a "
                     r"keras_reid progress file.*move it away"):
    runs.Progress.load(broken)


def _edited_progress(run, dest, edit):
  """A copy of the run whose progress.json entries went through `edit`."""
  shutil.copytree(run, dest)
  path = os.path.join(dest, runs.PROGRESS_FILE)
  with open(path) as f:
    data = json.load(f)
  data["finished"] = edit(data["finished"])
  with open(path, "w") as f:
    json.dump(data, f)
  return dest


def _swap_checkpoints(entries):
  one, two = entries
  return [dict(one, checkpoint=two["checkpoint"]),
          dict(two, checkpoint=one["checkpoint"])]


@pytest.mark.parametrize("edit, message", [
    # Each entry names the other step's checkpoint.
    (_swap_checkpoints, r"'synthetic' step 1 names the checkpoint "
     r"'checkpoints/synthetic/step2/ckpt-1'; expected "
     r"checkpoints/synthetic/step1/ckpt-<iteration>"),
    # A checkpoint outside the run directory.
    (lambda e: [e[0], dict(e[1], checkpoint="../../elsewhere/ckpt-1")],
     r"names the checkpoint '\.\./\.\./elsewhere/ckpt-1'"),
    (lambda e: [e[0], e[0]], r"'synthetic' step 1 is listed twice"),
])
def test_progress_entries_must_name_their_own_checkpoints(run, tmp_path, edit,
                                                          message):
  # Regression: swapped entries made evaluate use step 1's weights.
  edited = _edited_progress(run, str(tmp_path / "edited"), edit)
  with pytest.raises(ValueError, match=message):
    runs.Progress.load(edited)


def test_progress_entries_out_of_the_configs_order_are_refused(run, tmp_path):
  edited = _edited_progress(run, str(tmp_path / "edited"),
                            lambda e: [e[1], e[0]])
  expected = (r"lists the finished steps \['synthetic/step2', "
              r"'synthetic/step1'\], but the run's config trains "
              r"\['synthetic/step1', 'synthetic/step2'\] in that order")
  with pytest.raises(ValueError, match=expected):
    runs.load_finished_run(edited)   # evaluate and export read it so
  with pytest.raises(ValueError, match=expected):
    stages.train(_config(os.path.dirname(run)), edited)  # resume
  # The untouched run and a partial one (a prefix) still load.
  runs.load_finished_run(run)
  runs.load_finished_run(_partial_copy(run, str(tmp_path / "partial")))


def test_entry_points_print_user_errors_as_one_line(run, tmp_path):
  broken = str(tmp_path / "broken")
  shutil.copytree(run, broken)
  with open(os.path.join(broken, runs.PROGRESS_FILE), "w") as f:
    f.write("{not json")
  proc = _run("keras_reid.export", f"--workdir={broken}",
              f"--export_dir={tmp_path / 'export'}")
  assert proc.returncode == 1
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "progress.json is damaged" in last

  text = tmp_path / "feature_files.txt"
  text.write_text("query_features,gallery_features\n1,2\n")
  with pytest.raises(ValueError, match="is not an .npz file"):
    feature_files.load_feature_file(str(text))
  proc = _run("keras_reid.evaluate", f"--features={text}")
  assert proc.returncode == 1
  assert "Traceback" not in proc.stderr and "allow_pickle" not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith(
      f"error: {text} is not an .npz file")
  # The traceback stays available.
  proc = _run("keras_reid.evaluate", f"--features={text}", "--verbosity=1")
  assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_npz_features_still_load(tmp_path):
  rng = np.random.default_rng(0)
  path = str(tmp_path / "f.npz")
  np.savez(path, query_features=rng.normal(size=(2, 3)),
           gallery_features=rng.normal(size=(3, 3)), query_pids=[1, 2],
           gallery_pids=[1, 2, 2], query_camids=[0, 0],
           gallery_camids=[1, 1, 1])
  assert feature_files.load_feature_file(path)["gallery_pids"].tolist() == [1, 2, 2]


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
