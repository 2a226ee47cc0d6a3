"""Training with two replicas: mirrored on two logical CPUs, two workers.

MirroredStrategy runs in a subprocess so that the logical device
configuration (which must be set before TensorFlow initialises its devices)
does not leak into the other tests of the session; MultiWorkerMirrored
runs as two local `python -m keras_reid.train` processes on loopback ports.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

from keras_reid.data import from_config
from keras_reid.training import stage_setup
from tests.training import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TINY_CONFIG = os.path.join(REPO, "tests", "training", "tiny_config.py")

MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from keras_reid.data import from_config
    from keras_reid.training import distribute, stage_setup, stages
    from tests.training import tiny_config

    config = tiny_config.get_config()
    config.data.synthetic_dir, workdir = sys.argv[1], sys.argv[2]
    config.train.distribute = "mirrored"
    config.stages.synthetic.update(dict(step1_iterations=1, step2_iterations=2))
    strategy = distribute.make_strategy("mirrored")
    # The batches the two replicas get at the first step.
    stage = config.stages.synthetic
    data = from_config.load_stage_dataset(stage, config)
    make = stage_setup.train_dataset_fn(data, stage, config, seed=1)
    batch = next(iter(strategy.distribute_datasets_from_function(make)))
    images = [x.numpy() for x in
              strategy.experimental_local_results(batch["images"])]
    devices = [x.device for x in
               strategy.experimental_local_results(batch["images"])]
    metrics = stages.train(config, workdir)
    print(json.dumps(dict(
        replicas=strategy.num_replicas_in_sync, devices=devices,
        shapes=[list(i.shape) for i in images],
        same_images=bool(np.array_equal(images[0], images[1])),
        rank1=metrics["rank1"])))
""")


def _env():
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
              PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.mark.slow
def test_mirrored_two_cpu_replicas_train_to_the_end(tmp_path):
  workdir = tmp_path / "run"
  proc = subprocess.run(
      [sys.executable, "-c", MIRRORED_SCRIPT, str(tmp_path / "synthetic"),
       str(workdir)], cwd=REPO, env=_env(), capture_output=True, text=True,
      timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["replicas"] == 2
  assert sorted(d.rsplit(":", 1)[-1] for d in out["devices"]) == ["0", "1"]
  # Each replica gets its own K x M batch (2 ids x 2 images of 64x32).
  assert out["shapes"] == [[4, 64, 32, 3], [4, 64, 32, 3]]
  assert not out["same_images"]
  assert 0.0 <= out["rank1"] <= 1.0
  progress = json.loads((workdir / "progress.json").read_text())
  assert [(p["stage"], p["step"]) for p in progress["finished"]] == [
      ("synthetic", 1), ("synthetic", 2)]
  assert (workdir / "metrics.json").exists()


def _free_ports(n):
  socks = [socket.socket() for _ in range(n)]
  for s in socks:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in socks]
  for s in socks:
    s.close()
  return ports


def _start_workers(workdir, synthetic_dir, step2_iterations, log_dir):
  """Two local workers of one MultiWorkerMirroredStrategy cluster."""
  cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
  procs = []
  for index in range(2):
    env = dict(_env(), TF_CONFIG=json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": index}}))
    log = open(os.path.join(log_dir, f"worker{index}.log"), "a")
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "keras_reid.train", f"--config={TINY_CONFIG}",
         f"--workdir={workdir}", "--config.train.distribute=multi_worker",
         f"--config.data.synthetic_dir={synthetic_dir}",
         "--config.stages.synthetic.step1_iterations=1",
         f"--config.stages.synthetic.step2_iterations={step2_iterations}",
         "--config.train.checkpoint_every=1"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
  return procs


def _wait(procs, timeout):
  deadline = time.time() + timeout
  for p in procs:
    try:
      p.wait(timeout=max(1, deadline - time.time()))
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise


@pytest.fixture
def synthetic_dir(tmp_path):
  root = str(tmp_path / "synthetic")
  from_config.ensure_synthetic(root, tiny_config.get_config())
  return root


def test_workers_draw_different_batches(synthetic_dir):
  config = tiny_config.get_config()
  config.data.synthetic_dir = synthetic_dir
  stage = config.stages.synthetic
  data = from_config.load_stage_dataset(stage, config)
  make = stage_setup.train_dataset_fn(data, stage, config, seed=1)
  first = [next(iter(make(tf.distribute.InputContext(
      num_input_pipelines=2, input_pipeline_id=i))))["images"].numpy()
           for i in range(2)]
  assert not np.array_equal(first[0], first[1])


@pytest.mark.slow
def test_multi_worker_runs_and_resumes_after_a_worker_is_killed(
    tmp_path, synthetic_dir):
  workdir = str(tmp_path / "run")
  procs = _start_workers(workdir, synthetic_dir, 12, str(tmp_path))
  step2 = os.path.join(workdir, "checkpoints", "synthetic", "step2")
  deadline = time.time() + 240
  while time.time() < deadline and all(p.poll() is None for p in procs):
    latest = tf.train.latest_checkpoint(step2) if os.path.isdir(step2) else None
    if latest and int(latest.rsplit("-", 1)[1]) >= 3:
      break
    time.sleep(0.1)
  logs = lambda: "\n".join(
      (tmp_path / f"worker{i}.log").read_text()[-2000:] for i in range(2))
  assert all(p.poll() is None for p in procs), logs()
  procs[1].send_signal(signal.SIGKILL)  # one worker dies mid step 2 ...
  procs[1].wait()
  procs[0].send_signal(signal.SIGKILL)  # ... and the chief, stuck, is stopped
  procs[0].wait()
  assert not os.path.exists(os.path.join(workdir, "metrics.json"))

  # The same two commands resume from the chief's checkpoints and finish.
  procs = _start_workers(workdir, synthetic_dir, 12, str(tmp_path))
  _wait(procs, 300)
  assert [p.returncode for p in procs] == [0, 0], logs()
  for i in range(2):
    assert "Resuming synthetic step 2" in (
        tmp_path / f"worker{i}.log").read_text(), logs()
  progress = json.loads(open(os.path.join(workdir, "progress.json")).read())
  assert [(p["stage"], p["step"]) for p in progress["finished"]] == [
      ("synthetic", 1), ("synthetic", 2)]
  assert tf.train.latest_checkpoint(step2).endswith("-12")
  assert os.path.exists(os.path.join(workdir, "metrics.json"))
  # The other worker wrote apart from the chief.
  assert os.path.isdir(os.path.join(workdir, "workers", "worker1"))


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
