"""keras_reid.unsupervised works without TensorFlow (and runs end to end)."""

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

SCRIPT = textwrap.dedent("""
    import sys
    # None in sys.modules makes `import tensorflow` raise ImportError.
    for name in ("tensorflow", "keras", "tf_keras"):
      sys.modules[name] = None
    import numpy as np
    from keras_reid.unsupervised import clustering, graph, grdl, pseudo_labels

    rng = np.random.default_rng(0)
    pids = np.repeat(np.arange(20), 2)
    camids = np.tile([0, 1], 20)
    centres = 3 * rng.normal(size=(20, 16))
    y = (centres[pids] + rng.normal(size=(40, 16))).astype(np.float32)
    is_a = graph.camera_a_mask(camids)
    lap = graph.laplacian(graph.cross_camera_knn_graph(y, is_a, 3))
    res = grdl.grdl(y, lap, 8, 0.01, max_iter=5)
    hard = pseudo_labels.hard_pseudo_labels(res.codes, is_a)
    soft = pseudo_labels.soft_pseudo_labels(y, is_a, top_m=3)
    acc = pseudo_labels.label_accuracy(hard, pids, is_a)["accuracy"]
    acc_y = pseudo_labels.label_accuracy(soft, pids, is_a)["accuracy"]
    assert hard.shape == (40,) and soft.shape == (40, 20), (hard.shape,
                                                            soft.shape)
    assert acc > 0.3 and acc_y > 0.8, (acc, acc_y)  # chance: 0.05
    clusters = clustering.cluster_features(y, camids, eps=0.6, min_samples=2,
                                           k1=3, k2=1, camera_weight=0.1)
    assert clusters.num_clusters > 0, clusters.labels
    assert not any(m == "tensorflow" or m.startswith("tensorflow.")
                   for m, v in sys.modules.items() if v is not None)
    print("OK", acc, acc_y)
""")


def test_imports_and_runs_without_tensorflow():
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep +
             os.environ.get("PYTHONPATH", ""))
  out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=120,
                       check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.startswith("OK")


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
