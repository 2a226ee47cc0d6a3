"""Tests of config.train.precision: "auto"'s decision, policies, one step each."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_reid import config as config_lib
from keras_reid.models import builders
from keras_reid.models import precision
from keras_reid.training import loop
from tests.training import tiny_config

# Two logical CPUs, as /proc/cpuinfo lists them (flags trimmed).
ZEN4_CPUINFO = """processor\t: 0
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni

processor\t: 1
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni
"""
SAPPHIRE_RAPIDS_CPUINFO = "flags\t\t: avx512f amx_bf16 amx_tile amx_int8\n"
SKYLAKE_CPUINFO = """processor\t: 0
flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni
"""

K, M, H, W = 2, 2, 64, 32


@pytest.mark.parametrize("cpuinfo, gpus, expected", [
    (ZEN4_CPUINFO, [], "mixed_bfloat16"),
    (SAPPHIRE_RAPIDS_CPUINFO, [], "mixed_bfloat16"),
    (SKYLAKE_CPUINFO, [], "float32"),
    ("", [], "float32"),  # unknown CPU
    # A flag named like it but not it ("avx512_bf16x") does not count.
    ("flags\t: avx512_bf16x\n", [], "float32"),
    # GPUs decide when there are any: Ampere and later have bfloat16.
    (SKYLAKE_CPUINFO, [(8, 0)], "mixed_bfloat16"),
    (SKYLAKE_CPUINFO, [(9, 0), (8, 6)], "mixed_bfloat16"),
    (ZEN4_CPUINFO, [(7, 5)], "float32"),
    (ZEN4_CPUINFO, [(8, 0), (7, 0)], "float32"),  # the slowest GPU decides
])
def test_auto_decision(cpuinfo, gpus, expected):
  resolved = precision.resolve("auto", cpuinfo_text=cpuinfo,
                               gpu_capabilities=gpus)
  assert resolved.policy == expected
  assert resolved.requested == "auto" and resolved.reason


def test_auto_keeps_depthwise_backbones_in_float32_on_cpus():
  for backbone in ("mobilenet_v1", "efficientnet_lite0"):
    assert precision.resolve("auto", backbone=backbone,
                             cpuinfo_text=ZEN4_CPUINFO,
                             gpu_capabilities=[]).policy == "float32"
    # Not on GPUs, and not when asked for explicitly.
    assert precision.resolve("auto", backbone=backbone,
                             cpuinfo_text=ZEN4_CPUINFO,
                             gpu_capabilities=[(8, 0)]).policy == (
                                 "mixed_bfloat16")
    assert precision.resolve("mixed_bfloat16", backbone=backbone).policy == (
        "mixed_bfloat16")
  assert precision.resolve("auto", backbone="googlenet",
                           cpuinfo_text=ZEN4_CPUINFO,
                           gpu_capabilities=[]).policy == "mixed_bfloat16"


def test_auto_needs_the_flag_on_every_cpu():
  mixed = ZEN4_CPUINFO.replace("avx512_bf16 avx512_vnni\n", "avx512_vnni\n", 1)
  assert not precision.cpu_has_bf16(mixed)
  assert precision.cpu_has_bf16(ZEN4_CPUINFO)


def test_explicit_precisions_and_unknown_name():
  for name in ("float32", "mixed_bfloat16", "mixed_float16"):
    assert precision.resolve(name, cpuinfo_text="",
                             gpu_capabilities=[]).policy == name
  with pytest.raises(ValueError, match="train.precision.*mixed_bfloat16"):
    precision.resolve("bfloat16")


def test_loss_scaling_only_for_float16():
  assert precision.uses_loss_scaling("mixed_float16")
  assert not precision.uses_loss_scaling("mixed_bfloat16")
  assert not precision.uses_loss_scaling("float32")


def test_policy_scope_and_decorator_restore_the_policy():
  before = keras.config.dtype_policy().name

  @precision.restores_policy
  def run():
    keras.config.set_dtype_policy("mixed_bfloat16")
    return keras.config.dtype_policy().name

  assert run() == "mixed_bfloat16"
  assert keras.config.dtype_policy().name == before
  with precision.policy_scope("mixed_float16"):
    assert keras.config.dtype_policy().name == "mixed_float16"
  assert keras.config.dtype_policy().name == before


def test_removed_mixed_precision_key_names_the_new_one():
  config = tiny_config.get_config()
  config.train.mixed_precision = True
  with pytest.raises(ValueError, match="train.precision"):
    config_lib.validate_config(config)


def _batch():
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(K), M).astype(np.int32)
  ii, jj = np.triu_indices(K * M, k=1)
  return dict(images=rng.normal(size=(K * M, H, W, 3)).astype(np.float32),
              labels=labels, pair_i=ii.astype(np.int32),
              pair_j=jj.astype(np.int32),
              pair_same=(labels[ii] == labels[jj]).astype(np.float32))


@pytest.mark.parametrize("policy, compute", [
    ("float32", "float32"), ("mixed_bfloat16", "bfloat16"),
    ("mixed_float16", "float16")])
def test_one_train_step_under_each_policy(policy, compute):
  config = tiny_config.get_config()
  config.model.aux_heads = False
  with precision.policy_scope(policy):
    model = builders.build_training_model(
        config.model, num_classes=K, input_shape=(H, W, 3), seed=0)
    embedder = builders.build_embedder(model)
  assert model.dtype_policy.name == policy
  backbone = model.get_layer("backbone")
  convs = [layer for layer in backbone._flatten_layers()  # pylint: disable=protected-access
           if "conv" in layer.name and layer.weights]
  assert convs and all(conv.compute_dtype == compute for conv in convs)
  # Float32 wherever the policy is: variables (BN statistics included), the
  # verification difference and its head.
  assert all(v.dtype == "float32" for v in model.variables
             if "seed_generator" not in v.path)  # dropout seeds: int64
  for name in ("ver_subtract", "ver_relu", "verifier"):
    assert model.get_layer(name).compute_dtype == "float32"

  batch = _batch()
  outputs = model({k: batch[k] for k in ("images", "pair_i", "pair_j")},
                  training=False)
  assert outputs["embedding"].dtype == "float32"
  assert outputs["verification_logits"].dtype == "float32"
  assert embedder(batch["images"]).dtype == "float32"

  builders.set_step_trainable(model, 2)
  step2 = loop.FineTuningStep("s", 2, 1, 0.01, 100, 0.1)
  optimizer = loop.make_optimizer(
      config.train, step2,
      loss_scaling=precision.uses_loss_scaling(model.dtype_policy.name))
  assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer) == (
      policy == "mixed_float16")
  strategy = tf.distribute.get_strategy()
  train_iteration = loop.make_train_iteration(
      model, optimizer, strategy, loop.loss_weights(config.loss, 2),
      jit_compile=False, weight_decay=5e-4)
  kernel0 = model.get_layer("verifier").kernel.numpy().copy()
  iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
  values = train_iteration(iterator)
  assert all(v.dtype == tf.float32 for v in values.values())
  assert np.isfinite(float(values["loss/total"]))
  assert float(values["loss/l2"]) > 0
  # A loss-scaled step whose float16 gradients overflow is skipped and the
  # scale halved (it starts at 2^15): float16 may need a few steps.
  for _ in range(20 if policy == "mixed_float16" else 0):
    if not np.array_equal(kernel0, model.get_layer("verifier").kernel.numpy()):
      break
    train_iteration(iterator)
  assert not np.array_equal(kernel0, model.get_layer("verifier").kernel.numpy())


def test_bfloat16_embedding_is_close_to_float32():
  """The same weights under both policies: bfloat16 rounding, not garbage."""
  config = tiny_config.get_config()
  with precision.policy_scope("float32"):
    reference = builders.build_training_model(
        config.model, num_classes=K, input_shape=(H, W, 3), seed=0)
  with precision.policy_scope("mixed_bfloat16"):
    low = builders.build_training_model(
        config.model, num_classes=K, input_shape=(H, W, 3), seed=0)
  low.set_weights(reference.get_weights())
  images = _batch()["images"]
  a = builders.build_embedder(reference)(images).numpy()
  b = builders.build_embedder(low)(images).numpy()
  assert b.dtype == np.float32
  cosine = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
  assert np.all(cosine > 0.99), cosine
  assert not np.array_equal(a, b)  # it did compute in bfloat16


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q"]))
