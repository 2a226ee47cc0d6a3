"""Which kind of CPU a run computed on, for runtime.json and the benchmarks.

A deterministic float32 run gives bit-identical metrics on one kind of CPU,
but not across kinds: oneDNN and Eigen pick their kernels by the vector
instructions the CPU has, and 1,100 iterations turn the different rounding
into different models. Measured with the default job (bench/default_job.py,
bench/training_results.md): Rank-1 / mAP 58.9 / 50.0 on a 2-core AMD EPYC
with AVX2 only against 54.4 / 45.8 on one with AVX-512 and bfloat16, both on
oneDNN. So a run records its CPU kind, and a recorded figure names the kind
it holds on. Standard library only: importing it does not import
TensorFlow.
"""

from __future__ import annotations

import platform

CPUINFO = "/proc/cpuinfo"

# /proc/cpuinfo flags that decide which float32 / bfloat16 kernels run, in
# the order of `vector_isa`'s levels.
VECTOR_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_vnni",
                "avx512_bf16", "amx_tile", "amx_bf16")

# (level, the flag that defines it), highest first: a CPU's level is the
# first whose flag it has.
_LEVELS = (("amx", "amx_tile"), ("avx512_bf16", "avx512_bf16"),
           ("avx512", "avx512f"), ("avx2", "avx2"), ("avx", "avx"))


def read_cpuinfo(cpuinfo_path: str = CPUINFO) -> str:
  """The text of /proc/cpuinfo; "" where there is none (not Linux)."""
  try:
    with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:
      return f.read()
  except OSError:
    return ""


def describe(cpuinfo_path: str = CPUINFO) -> dict:
  """The CPU this process runs on.

  Args:
    cpuinfo_path: Linux's /proc/cpuinfo (a file in its format, for tests).

  Returns:
    {"model": the first "model name" (None if not given),
     "vector_isa": "amx" | "avx512_bf16" | "avx512" | "avx2" | "avx" for x86
       CPUs by the highest of those their flags name, "no_avx" for an x86
       CPU with none of them, or platform.machine() (e.g. "arm64") where
       there is no /proc/cpuinfo with x86 flags,
     "flags": the VECTOR_FLAGS present, in that order}.
  """
  model, flags = None, None
  for line in read_cpuinfo(cpuinfo_path).splitlines():
    key, _, value = line.partition(":")
    key = key.strip()
    if key == "model name" and model is None:
      model = value.strip()
    elif key == "flags" and flags is None:
      flags = set(value.split())
  if flags is None:  # not Linux, or not x86: no x86 flags to read
    return {"model": model, "vector_isa": platform.machine() or "unknown",
            "flags": []}
  level = next((name for name, flag in _LEVELS if flag in flags), "no_avx")
  return {"model": model, "vector_isa": level,
          "flags": [f for f in VECTOR_FLAGS if f in flags]}
