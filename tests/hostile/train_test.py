"""Hostile input to `python -m keras_reid.train`: its environment, its config
keys, its data folders and its dataset options.

Guaranteed for the command line:
  * TensorFlow's start-up lines (absl's pre-init warning, CUDA probing,
    CPU-feature notices) are not printed unless KERAS_REID_TF_LOGS=1 asks
    for them, with TF_CPP_MIN_LOG_LEVEL unset (keras_reid/quiet.py);
  * a mistyped --config.<key> is one line naming the key and the closest
    valid one (or the keys of its section), whether or not --config is given;
  * a stage folder that does not exist (REID_DATA_ROOT unset or wrong) is one
    line naming the folder, the layout expected there and REID_DATA_ROOT
    with its value; an empty stage root names REID_DATA_ROOT too.

Dataset options (config stages.<stage>.options): the same options string
reaches the readers from a training config (`from_config.load_stage_dataset`),
from `python -m keras_reid.evaluate --options` and from `python -m
keras_reid.data.inspect --options`. Guaranteed:
  * a bool option (allow_incomplete, combine_val, ...) is true or false in
    any case, and is the boolean it says: allow_incomplete=False keeps the
    reader refusing an incomplete copy (the string "False" was truthy);
  * any other value of a bool option ("no", "maybe", "1", "0", "yes") is an
    error naming the option, the value and the values it takes; an int
    option refuses a non-integer the same way;
  * an unknown option is a ValueError naming the reader's options (it was a
    TypeError with a traceback), the split is refused as an option, and a
    programmatic `datasets.load_dataset` call gets the same checks;
  * the command line prints such an error as one line.

Resuming a run killed during a step whose latest checkpoint is cut short
(its data file truncated): the step restarts from the previous checkpoint
its CheckpointManager kept, saying so in one warning line, and ends with
exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from configs import default
from keras_reid import schema
from keras_reid import user_errors
from keras_reid.data import datasets
from keras_reid.data import from_config
from tests.hostile import tiny_run

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _tiny_market(root):
  """A Market-1501 folder far smaller than the published set."""
  pixel = Image.fromarray(np.zeros((8, 4, 3), np.uint8))
  for sub, name in (("bounding_box_train", "0002_c1s1_000451_03.jpg"),
                    ("bounding_box_train", "0002_c2s1_000551_01.jpg"),
                    ("bounding_box_test", "0004_c2s1_000001_01.jpg"),
                    ("query", "0004_c1s1_000004_01.jpg")):
    os.makedirs(root / sub, exist_ok=True)
    pixel.save(root / sub / name)
  return str(root)


@pytest.mark.parametrize("text,value", [
    ("False", False), ("false", False), ("FALSE", False), (" False ", False),
    ("True", True), ("TRUE", True), ("true", True)])
def test_booleans_in_any_case(text, value):
  for dataset in ("market1501", None):
    assert from_config.parse_options(f"allow_incomplete={text}", dataset) == {
        "allow_incomplete": value}
  assert from_config.parse_stage_options(
      f"combine_val={text}", ["msmt17"]) == {"msmt17": {"combine_val": value}}


@pytest.mark.parametrize("text", ["no", "maybe", "1", "0", "yes", ""])
def test_other_values_of_a_bool_option_are_refused(text):
  message = (f"allow_incomplete='{text}' of market1501: expected true or "
             "false")
  with pytest.raises(ValueError, match=message):
    from_config.parse_options(f"allow_incomplete={text}", "market1501")
  with pytest.raises(ValueError, match=message):
    from_config.parse_stage_options(f"allow_incomplete={text}",
                                    ["market1501"])
  with pytest.raises(ValueError, match=message):
    datasets.load_dataset("market1501", "/nowhere", allow_incomplete=text)


def test_allow_incomplete_false_keeps_refusing_an_incomplete_copy(tmp_path):
  root = _tiny_market(tmp_path / "market")
  config = default.get_config()
  for text in ("False", "FALSE"):
    stage = schema.stage_config(dataset="market1501", root=root,
                                options=f"allow_incomplete={text}")
    with pytest.raises(ValueError, match="does not hold the published set"):
      from_config.load_stage_dataset(stage, config)
  stage = schema.stage_config(dataset="market1501", root=root,
                              options="allow_incomplete=TRUE")
  assert len(from_config.load_stage_dataset(stage, config).train) == 2
  stage = schema.stage_config(dataset="market1501", root=root,
                              options="allow_incomplete=no")
  with pytest.raises(ValueError, match="expected true or false"):
    from_config.load_stage_dataset(stage, config)


def test_int_options_refuse_other_values():
  with pytest.raises(ValueError, match=r"num_shared='2\.5' of prid2011: "
                     r"expected an integer, e.g\. num_shared=200"):
    from_config.parse_options("num_shared=2.5", "prid2011")
  assert from_config.parse_options("num_shared=150", "prid2011") == {
      "num_shared": 150}
  with pytest.raises(ValueError, match="num_train_ids=True of cuhk01"):
    datasets.load_dataset("cuhk01", "/nowhere", num_train_ids=True)


def test_unknown_options_name_the_valid_ones(tmp_path):
  message = (r"'allow_incomplet' is not an option of the market1501 reader; "
             r"its options are \['allow_incomplete'\]")
  with pytest.raises(ValueError, match=message):
    from_config.parse_options("allow_incomplet=true", "market1501")
  with pytest.raises(ValueError, match=message):
    datasets.load_dataset("market1501", _tiny_market(tmp_path / "m"),
                          allow_incomplet=True)
  with pytest.raises(ValueError, match="the split is not a reader option"):
    from_config.parse_options("split=3", "viper")
  # Unprefixed, an option goes to every dataset of a pooled stage.
  with pytest.raises(ValueError, match="write cuhk03:protocol=old"):
    from_config.parse_stage_options("protocol=old", ["market1501", "cuhk03"])
  assert from_config.parse_stage_options(
      "cuhk03:protocol=old", ["market1501", "cuhk03"]) == {
          "market1501": {}, "cuhk03": {"protocol": "old"}}


def test_string_options_keep_their_text():
  assert from_config.parse_options("cache_dir=2024,kind=detected",
                                   "cuhk03") == {
                                       "cache_dir": "2024", "kind": "detected"}


@pytest.mark.slow
def test_command_line_prints_one_line(tmp_path):
  root = _tiny_market(tmp_path / "market")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run(
      [sys.executable, "-m", "keras_reid.data.inspect", "--dataset=market1501",
       f"--root={root}", "--options=allow_incomplete=no"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines() == [
      "error: Dataset option allow_incomplete='no' of market1501: expected "
      "true or false (in any case), e.g. allow_incomplete=true. "
      "(--verbosity=1 shows the traceback)"]


def _environment(**settings):
  """os.environ without the settings these tests are about, plus `settings`."""
  env = {k: v for k, v in os.environ.items()
         if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_REID_TF_LOGS",
                      "REID_DATA_ROOT")}
  env.update(settings)
  return env


def _run(args, env, cwd=REPO, timeout=300):
  return subprocess.run([sys.executable, *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=timeout)


# What TensorFlow prints while it starts (see tests/quiet_test.py for whole
# lines), matched here independently of keras_reid.quiet's own patterns.
START_UP_NOISE = (
    "All log messages before absl::InitializeLog()", "cudart_stub.cc",
    "Could not find cuda drivers", "cpu_feature_guard.cc",
    "To enable the following instructions", "failed call to cuInit",
    "Unable to register cu", "oneDNN custom operations")


def _noise(stderr: str) -> set[str]:
  return {n for n in START_UP_NOISE if n in stderr}


@pytest.mark.slow
def test_tensorflow_start_up_lines_are_off_unless_asked_for():
  env = _environment(PYTHONPATH=REPO)
  quiet = _run(["-m", "keras_reid.train", "--help"], env)
  assert "--config.stages.synthetic.step2_iterations" in quiet.stdout
  assert quiet.stderr == "", quiet.stderr[-3000:]
  # What TensorFlow prints on this machine, if anything, comes back with
  # KERAS_REID_TF_LOGS=1.
  bare = _run(["-c", "import tensorflow"], env)
  loud = _run(["-m", "keras_reid.train", "--help"],
              dict(env, KERAS_REID_TF_LOGS="1"))
  assert _noise(loud.stderr) == _noise(bare.stderr)
  assert "--config.stages.synthetic.step2_iterations" in loud.stdout


@pytest.mark.parametrize("args, message", [
    (["--config.stages.synthetic.step2_iteration=5"],
     "--config.stages.synthetic.step2_iteration: no such key; did you mean "
     "--config.stages.synthetic.step2_iterations?"),
    (["--config=configs/default.py", "--config.trian.log_evry=5"],
     "--config.trian.log_evry: no such key; did you mean "
     "--config.train.log_every?"),
    ([f"--config={REPO}/configs/viper_cpu.py",
      "--config.stages.synthetic.step2_lr=1"],
     "--config.stages.synthetic.step2_lr: no such key; did you mean "
     "--config.stages.viper.step2_lr?"),
    (["--config.train.image_heigth=64"],
     "--config.train.image_heigth: no such key; did you mean "
     "--config.data.image_height?"),
    (["--noconfig.train.jit_compil"],
     "--config.train.jit_compil: no such key; did you mean "
     "--config.train.jit_compile?"),
    (["--config.train.lr=1"],
     "--config.train.lr: no such key; the keys of --config.train are "
     "['checkpoint_every', 'deterministic', 'distinct_pairs', 'distribute', "
         "'jit_compile', "
     "'log_every', 'max_checkpoints', 'momentum', 'optimizer', 'precision', "
     "'weight_decay', 'weight_decay_mode']."),
    (["--config.qqqq=1"],
     "--config.qqqq: no such key; the keys of --config are ['data', 'eval', "
     "'loss', 'model', 'seed', 'stages', 'train']."),
    (["--config.train.log_every.often=1"],
     "--config.train.log_every.often: --config.train.log_every is a value "
     "(20), not a section; set --config.train.log_every=VALUE."),
])
def test_mistyped_config_key_names_the_closest(args, message):
  argv = ["keras_reid.train", *args]
  assert user_errors.bad_config_override(argv, default.__file__) == message


def test_valid_overrides_and_unloadable_configs_pass_the_check():
  assert user_errors.bad_config_override(
      ["train", "--config.train.log_every=5", "--config.stages.synthetic."
       "unsupervised.grdl_iterations=3", "--noconfig.train.jit_compile"],
      default.__file__) is None
  # The flag itself reports a missing file; indexed paths are its to check.
  assert user_errors.bad_config_override(
      ["train", "--config=/nowhere.py", "--config.qqqq=1"]) is None
  assert user_errors.bad_config_override(
      ["train", "--config.stages[0]=1"], default.__file__) is None


@pytest.mark.slow
@pytest.mark.parametrize("args, line", [
    (["--config.stages.synthetic.step2_iteration=5"],
     "error: --config.stages.synthetic.step2_iteration: no such key; did you "
     "mean --config.stages.synthetic.step2_iterations?"),
    (["--config=configs/default.py", "--config.trian.log_every=5"],
     "error: --config.trian.log_every: no such key; did you mean "
     "--config.train.log_every?"),
])
def test_command_line_prints_a_mistyped_key_as_one_line(args, line):
  proc = _run(["-m", "keras_reid.train", *args], _environment())
  assert proc.returncode == 1
  assert proc.stderr.splitlines() == [line]


def test_missing_stage_folder_names_it_and_reid_data_root(tmp_path,
                                                          monkeypatch):
  config = default.get_config()
  missing = str(tmp_path / "data" / "viper")
  stage = schema.stage_config(dataset="viper", root=missing)
  monkeypatch.delenv("REID_DATA_ROOT", raising=False)
  with pytest.raises(FileNotFoundError) as e:
    from_config.load_stage_dataset(stage, config)
  message = str(e.value)
  # The reader's layout, the folder, the variable, its value and the flag.
  assert "Expected cam_a/ and cam_b/" in message
  assert (f"The folder {missing!r} does not exist: set REID_DATA_ROOT to the "
          "folder holding the datasets (it is unset;") in message
  assert "--config.stages.<name>.root=DIR" in message
  monkeypatch.setenv("REID_DATA_ROOT", str(tmp_path / "data"))
  with pytest.raises(FileNotFoundError,
                     match=f"it is '{tmp_path / 'data'}'"):
    from_config.load_stage_dataset(stage, config)
  with pytest.raises(ValueError, match="the stage's root is empty: set "
                     "REID_DATA_ROOT"):
    from_config.load_stage_dataset(schema.stage_config(dataset="viper"),
                                   config)
  # A folder that exists but holds another layout keeps the reader's words.
  os.makedirs(missing)
  with pytest.raises(FileNotFoundError) as e:
    from_config.load_stage_dataset(stage, config)
  assert "REID_DATA_ROOT" not in str(e.value)


@pytest.mark.slow
def test_command_line_names_the_missing_data_folder(tmp_path):
  # configs/viper_cpu.py reads $REID_DATA_ROOT/reid_pool first.
  data = tmp_path / "nowhere"
  proc = _run(["-m", "keras_reid.train",
               f"--config={REPO}/configs/viper_cpu.py",
               f"--workdir={tmp_path / 'run'}"],
              _environment(REID_DATA_ROOT=str(data), PYTHONPATH=REPO),
              cwd=str(tmp_path))
  assert proc.returncode == 1
  errors = [line for line in proc.stderr.splitlines()
            if line.startswith("error:")]
  assert len(errors) == 1, proc.stderr[-3000:]
  assert f"The folder '{data / 'reid_pool'}' does not exist: set " in errors[0]
  assert f"REID_DATA_ROOT to the folder holding the datasets (it is " \
         f"'{data}';" in errors[0]
  assert "Expected a CSV with columns path,pid,camid" in errors[0]


@pytest.mark.slow
def test_resume_from_a_truncated_checkpoint_trains_its_iterations_again(
    tmp_path_factory, tmp_path, caplog):
  # Imported here: most tests above need no TensorFlow.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from keras_reid import runs  # pylint: disable=g-import-not-at-top
  from keras_reid.training import stages  # pylint: disable=g-import-not-at-top
  base = str(tmp_path_factory.getbasetemp() / "tiny_run")
  tiny = tiny_run.trained(base)
  killed = tiny_run.copy(tiny, str(tmp_path / "run"))
  # As if killed after step 2 saved ckpt-4 (cut short) but before
  # progress.json recorded the step.
  path = runs.progress_path(killed)
  with open(path) as f:
    progress = json.load(f)
  progress["finished"] = progress["finished"][:1]
  with open(path, "w") as f:
    json.dump(progress, f)
  bad = tiny_run.truncate(tiny_run.data_file(killed, 4))

  stages.train(tiny_run.config(base), killed)

  said = [r.getMessage() for r in caplog.records
          if "unreadable" in r.getMessage()]
  assert said == [
      f"Checkpoint file {bad} is unreadable (cut short: Read less bytes than "
      "requested); using the previous checkpoint "
      f"{os.path.join(killed, tiny_run.STEP2, 'ckpt-2')} (iteration 2) "
      "instead."]
  assert runs.Progress.load(killed).is_finished("synthetic", 2)
  # Iterations 3 and 4 trained again: the same weights, optimizer state and
  # counter as the uninterrupted run's final checkpoint.
  want = tf.train.load_checkpoint(os.path.join(tiny, tiny_run.STEP2, "ckpt-4"))
  got = tf.train.load_checkpoint(os.path.join(killed, tiny_run.STEP2,
                                              "ckpt-4"))
  dtypes = want.get_variable_to_dtype_map()
  assert got.get_variable_to_dtype_map() == dtypes
  for key, dtype in dtypes.items():
    if dtype not in (tf.variant, tf.string):
      np.testing.assert_array_equal(got.get_tensor(key), want.get_tensor(key),
                                    err_msg=key)


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))


@pytest.mark.slow
def test_command_line_refuses_an_out_of_range_value_before_training(tmp_path):
  # Regression: a negative step-2 lr trained by gradient ascent and
  # exited 0. Now one line, exit 1, and no run directory is created.
  workdir = tmp_path / "run"
  proc = _run(["-m", "keras_reid.train", f"--workdir={workdir}",
               "--config.stages.synthetic.step2_lr=-0.01"], _environment())
  assert proc.returncode == 1
  errors = [line for line in proc.stderr.splitlines() if line.strip()]
  assert errors == [
      "error: config.stages.synthetic.step2_lr=-0.01: expected a finite "
      "number > 0. Fix it in the config file or with "
      "--config.stages.synthetic.step2_lr=VALUE. (--verbosity=1 shows the "
      "traceback)"], proc.stderr[-3000:]
  assert not workdir.exists()
