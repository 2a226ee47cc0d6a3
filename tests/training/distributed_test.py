"""Training with two replicas: MirroredStrategy on two logical CPU devices.

Runs in a subprocess so that the logical device configuration (which must
be set before TensorFlow initialises its devices) does not leak into the
other tests of the session.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from keras_reid.data import from_config
    from keras_reid.training import distribute, stages
    from tests.training import tiny_config

    config = tiny_config.get_config()
    config.data.synthetic_dir, workdir = sys.argv[1], sys.argv[2]
    config.train.distribute = "mirrored"
    config.stages.synthetic.update(dict(step1_steps=1, step2_steps=2))
    strategy = distribute.make_strategy("mirrored")
    # The batches the two replicas get at the first step.
    stage = config.stages.synthetic
    data = from_config.load_stage_dataset(stage, config)
    make = stages.train_dataset_fn(data, stage, config, "tf", seed=1)
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
  assert [(p["stage"], p["phase"]) for p in progress["finished"]] == [
      ("synthetic", 1), ("synthetic", 2)]
  assert (workdir / "metrics.json").exists()


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
