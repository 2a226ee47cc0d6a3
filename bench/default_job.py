"""Recomputes the default main job's figures that README.md states.

Runs `python -m keras_reid.train` (keras_reid/default.py, no flags but a fresh
--workdir) in a subprocess, reads its metrics.json and compares Rank-1 and
mAP with the recorded values (bench/training_results.md, "The default main
job"). The run is deterministic (config.train.deterministic, seeded data and
weights) wherever the checkout lies, on one kind of CPU with one kernel
library: a difference beyond TOLERANCE from the figure RECORDED for the
run's CPU kind and kernels means the code changed the result: rerun, then
update README.md, bench/training_results.md and RECORDED together. A CPU
kind without a recorded figure exits 2 after printing its figures.
About 2 minutes on 2 idle CPU cores.

Usage:
  python bench/default_job.py [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from keras_reid import runs  # noqa: E402
# Measured with this script (bench/training_results.md gives the commands),
# by the CPU kind (runtime.json's cpu.vector_isa, keras_reid/cpu_kind.py) and
# the kernels TensorFlow ran (runtime.json's onednn.enabled: oneDNN's, the
# default since keras_reid turns them on, or Eigen's with
# TF_ENABLE_ONEDNN_OPTS=0). Every pair gave bit-identical metrics in each of
# its runs (checkouts in different folders); the pairs differ by float32
# rounding, which 1,100 training iterations on 30 identities turn into up to
# 13 Rank-1 points. Fractions, as in metrics.json.
#   avx2: a 2-core AMD EPYC with AVX2 only, 2026-12-07 (oneDNN 3 runs, Eigen 4).
#   avx512_bf16: a 2-core AMD EPYC with AVX-512 and bfloat16, 2026-12-07
#     (oneDNN 3 runs, Eigen 3).
RECORDED = {
    ("avx2", True): {"rank1": 0.5889, "mAP": 0.5003},
    ("avx2", False): {"rank1": 0.4556, "mAP": 0.3790},
    ("avx512_bf16", True): {"rank1": 0.5444, "mAP": 0.4580},
    ("avx512_bf16", False): {"rank1": 0.5889, "mAP": 0.4558},
}
# The measured spread of those runs on one CPU kind (std 0: bit-identical)
# plus the rounding of RECORDED to 4 decimals.
MEASURED_STD = {"rank1": 0.0, "mAP": 0.0}
TOLERANCE = {k: 3 * MEASURED_STD[k] + 0.0005 for k in MEASURED_STD}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="",
                      help="run directory (default: a temporary one)")
  parser.add_argument("--keep", action="store_true",
                      help="keep the temporary run directory")
  args = parser.parse_args()
  workdir = args.workdir or tempfile.mkdtemp(prefix="default_job-")
  if args.workdir and os.path.exists(workdir):
    raise SystemExit(f"--workdir {workdir} exists; the job would resume it. "
                     "Give a new folder.")
  started = time.perf_counter()
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run(
      [sys.executable, "-m", "keras_reid.train", f"--workdir={workdir}"],
      cwd=REPO, env=env, capture_output=True, text=True)
  seconds = time.perf_counter() - started
  if proc.returncode != 0:
    sys.stderr.write(proc.stderr[-5000:])
    return proc.returncode
  metrics = runs.read_metrics(workdir)
  with open(runs.runtime_path(workdir), encoding="utf-8") as f:
    runtime = json.load(f)
  onednn = runtime["onednn"]["enabled"]
  cpu = runtime["cpu"]["vector_isa"]
  row = {k: metrics[k] for k in ("rank1", "rank5", "rank10", "rank20", "mAP",
                                 "mINP")}
  row["wall_seconds"] = round(seconds, 1)
  print(json.dumps(row))
  if not args.workdir and not args.keep:
    shutil.rmtree(workdir, ignore_errors=True)
  kernels = {True: "oneDNN", False: "Eigen (oneDNN off)"}.get(onednn)
  if kernels is None:
    print(f"runtime.json of {workdir} cannot say whether TensorFlow's oneDNN "
          f"kernels were on (onednn.enabled={onednn!r}); no figure to compare "
          "with.", file=sys.stderr)
    return 1
  recorded = RECORDED.get((cpu, onednn))
  if recorded is None:
    known = sorted({kind for kind, _ in RECORDED})
    print(f"No figure recorded for {kernels} kernels on CPU kind {cpu} "
          f"(recorded: {known}); float32 rounding differs across CPU kinds, "
          "so the figures above are this kind's. Run it again to check they "
          "repeat, then add them to RECORDED and bench/training_results.md.",
          file=sys.stderr)
    return 2
  off = {k: (metrics[k], v) for k, v in recorded.items()
         if abs(metrics[k] - v) > TOLERANCE[k]}
  if off:
    print(f"DIFFERENT from the recorded figures for {kernels} kernels on "
          f"CPU kind {cpu} (measured, recorded): {off}", file=sys.stderr)
    return 1
  print(f"matches the recorded figures for {kernels} kernels on CPU kind {cpu}",
        recorded)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
