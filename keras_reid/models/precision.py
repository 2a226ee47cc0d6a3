"""Numeric precision of training and inference: config.train.precision.

"float32", "mixed_bfloat16" and "mixed_float16" are Keras dtype policies
(variables in float32, computation in the lower precision); "auto" picks
bfloat16 where the hardware computes it natively (CPUs with AVX512_BF16 or
AMX-BF16, GPUs of compute capability >= 8.0) and float32 elsewhere, and on
CPUs for depthwise-convolution backbones (slower in bfloat16 there). Only
float16 needs loss scaling (its exponent is 5 bits; bfloat16 keeps float32's
8). Losses, softmax, BatchNorm statistics, the verification difference and
the L2 term are computed in float32 whatever the policy (see
models/builders.py, losses.py, training/loop.py), and embeddings leave the
models as float32.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Callable, Iterator, Sequence, TypeVar

import keras
import tensorflow as tf

from keras_reid import cpu_kind

AUTO = "auto"
FLOAT32 = "float32"
MIXED_BFLOAT16 = "mixed_bfloat16"
MIXED_FLOAT16 = "mixed_float16"
# config.train.precision -> what it means (the valid values, for errors).
PRECISIONS = {
    AUTO: "bfloat16 where the hardware has it natively, else float32",
    FLOAT32: "everything in float32",
    MIXED_BFLOAT16: "float32 variables, bfloat16 computation",
    MIXED_FLOAT16: "float32 variables, float16 computation, loss scaling",
}
# CPU flags (/proc/cpuinfo) of native bfloat16 arithmetic.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
MIN_BF16_GPU_CAPABILITY = (8, 0)  # Ampere
# Backbones built on depthwise convolutions, which TF runs slower in
# bfloat16 than in float32 on CPUs (measured on a Zen 4 with avx512_bf16:
# MobileNet v1 0.25 train step at 0.55-1.00x, GoogLeNet at 1.15-1.28x;
# bench/training_results.md): "auto" keeps them in float32 on CPUs.
CPU_BF16_SLOWER_BACKBONES = frozenset({
    "mobilenet_v1", "mobilenet_v2", "efficientnet_lite0",
    "efficientnet_lite1", "efficientnet_lite2", "efficientnetv2_b0"})
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Resolved:
  """A resolved precision: the Keras policy and why it was chosen."""
  requested: str
  policy: str
  reason: str

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


def cpu_has_bf16(cpuinfo_text: str) -> bool:
  """Whether /proc/cpuinfo text lists a native bfloat16 flag on every CPU.

  Args:
    cpuinfo_text: the text of /proc/cpuinfo (one "flags : ..." line per
      logical CPU).
  """
  flag_lines = [line.split(":", 1)[1].split() for line in
                cpuinfo_text.splitlines()
                if line.split(":", 1)[0].strip() == "flags" and ":" in line]
  return bool(flag_lines) and all(
      any(flag in flags for flag in BF16_CPU_FLAGS) for flags in flag_lines)


def _gpu_capabilities() -> list[tuple[int, int]]:
  capabilities = []
  for gpu in tf.config.list_physical_devices("GPU"):
    details = tf.config.experimental.get_device_details(gpu)
    capabilities.append(tuple(details.get("compute_capability", (0, 0))))
  return capabilities


def auto_policy(cpuinfo_text: str,
                gpu_capabilities: Sequence[tuple[int, int]],
                backbone: str = "") -> tuple[str, str]:
  """What "auto" means on a machine: (policy, reason).

  Args:
    cpuinfo_text: /proc/cpuinfo's text ("" when unknown).
    gpu_capabilities: the compute capability (major, minor) of every visible
      GPU; empty on a CPU-only machine.
    backbone: config.model.backbone; on CPUs, those of
      CPU_BF16_SLOWER_BACKBONES stay in float32.
  """
  if gpu_capabilities:
    lowest = min(tuple(c) for c in gpu_capabilities)
    if lowest >= MIN_BF16_GPU_CAPABILITY:
      return MIXED_BFLOAT16, (f"GPUs of compute capability >= "
                              f"{lowest[0]}.{lowest[1]} compute bfloat16")
    return FLOAT32, (f"a GPU of compute capability {lowest[0]}.{lowest[1]} "
                     "(< 8.0) has no fast bfloat16")
  if cpu_has_bf16(cpuinfo_text) and backbone in CPU_BF16_SLOWER_BACKBONES:
    return FLOAT32, (f"the CPU has native bfloat16, but backbone "
                     f"{backbone!r} (depthwise convolutions) trains slower "
                     "in it on CPUs")
  if cpu_has_bf16(cpuinfo_text):
    return MIXED_BFLOAT16, ("the CPU has native bfloat16 ("
                            + " or ".join(BF16_CPU_FLAGS) + ")")
  return FLOAT32, ("the CPU has no native bfloat16 ("
                   + " / ".join(BF16_CPU_FLAGS) + " not in /proc/cpuinfo)")


def resolve(precision: str, *, backbone: str = "",
            cpuinfo_text: str | None = None,
            gpu_capabilities: Sequence[tuple[int, int]] | None = None
            ) -> Resolved:
  """The Keras dtype policy for config.train.precision.

  Args:
    precision: one of PRECISIONS.
    backbone: config.model.backbone (see `auto_policy`).
    cpuinfo_text, gpu_capabilities: the machine, for "auto" (default: this
      machine's /proc/cpuinfo and visible GPUs).

  Raises:
    ValueError: an unknown precision, naming the valid ones.
  """
  if precision not in PRECISIONS:
    raise ValueError(f"config.train.precision={precision!r}: expected one of "
                     f"{list(PRECISIONS)}.")
  if precision != AUTO:
    return Resolved(precision, precision, "set in config.train.precision")
  if cpuinfo_text is None:
    cpuinfo_text = cpu_kind.read_cpuinfo()  # "" off Linux: float32
  if gpu_capabilities is None:
    gpu_capabilities = _gpu_capabilities()
  policy, reason = auto_policy(cpuinfo_text, gpu_capabilities, backbone)
  return Resolved(precision, policy, reason)


def uses_loss_scaling(policy: str) -> bool:
  """Only float16 underflows small gradients and needs loss scaling."""
  return policy == MIXED_FLOAT16


@contextlib.contextmanager
def policy_scope(policy: str) -> Iterator[None]:
  """Models built inside use the Keras dtype policy `policy`.

  Keras's policy is process-global; this restores the previous one on exit
  so that a run (or a test) does not leak it into later models.
  """
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy(policy)
  try:
    yield
  finally:
    keras.config.set_dtype_policy(previous)


def restores_policy(function: Callable[..., T]) -> Callable[..., T]:
  """Decorator: the caller's dtype policy is back when `function` returns.

  For a function that sets the process-global policy of its run (e.g.
  training.stages.train), so that later models (or tests) keep theirs.
  """
  @functools.wraps(function)
  def wrapped(*args, **kwargs):
    with policy_scope(keras.config.dtype_policy().name):
      return function(*args, **kwargs)
  return wrapped
