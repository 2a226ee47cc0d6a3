"""The absl entry points: --helpfull works, bad or missing input fails clearly."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, timeout=300):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
             PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("module, expected_flags", [
    ("keras_reid.train", ["--config", "--config.stages.synthetic.step2_lr",
                          "--config.model.ver_dropout_mode", "--workdir"]),
    ("keras_reid.evaluate", ["--features", "--workdir", "--saved_model",
                             "--cir_topk", "--splits"]),
    ("keras_reid.export", ["--workdir", "--export_dir", "--formats",
                           "--representative_images"]),
    ("keras_reid.data.inspect", ["--dataset", "--root", "--split"]),
])
def test_helpfull_lists_the_flags(module, expected_flags):
  proc = _run(module, "--helpfull")
  # absl exits with 1 after printing the help; what matters is the text.
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  for flag in expected_flags:
    assert flag in proc.stdout, (flag, proc.stdout[:3000])


def test_train_rejects_unknown_key_and_wrong_type():
  proc = _run("keras_reid.train", "--config.train.lrr=0.1")
  assert proc.returncode != 0
  assert "lrr" in proc.stderr
  proc = _run("keras_reid.train", "--config.data.image_height=tall")
  assert proc.returncode != 0
  assert "image_height" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["keras_reid.evaluate"], "exactly one of --features, --workdir, --saved_model"),
    (["keras_reid.export"], "--workdir"),
    (["keras_reid.data.inspect"], "--dataset"),
    (["keras_reid.data.inspect", "--dataset=viper", "--root=/nonexistent/viper"],
     "/nonexistent/viper"),
    (["keras_reid.evaluate", "--workdir=/nonexistent/run"], "/nonexistent/run"),
])
def test_missing_inputs_fail_with_a_clear_message(args, message):
  proc = _run(*args)
  assert proc.returncode != 0
  assert message in proc.stderr + proc.stdout, proc.stderr[-2000:]


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
