r"""Where a train step's time goes on this CPU, and what makes it faster.

Two modes, both on the real step-2 train step of keras_reid.training.loop
as bench/training_throughput.py builds it (`build_step`: cls + 3 x
verification over all pairs (+ GoogLeNet's auxiliary heads), coupled L2,
SGD momentum; random K x M batch repeated from memory), float32.

--mode=profile: timed sub-graphs, one tf.function each, built from the
step's own model, timed in alternating rounds (median seconds per call):
  input            next(iterator) of the in-memory dataset (eager)
  backbone_fwd     the nested "backbone" model, training=True
  backbone_fwd_bwd the same plus the gradient of its outputs (fixed random
                   cotangents) w.r.t. its trainable variables
  ver_heads        the 3 (or 1) verification heads (pair gather + pairwise
                   dropout + subtract + ReLU + Dense(2)) and their loss,
                   forward and backward, on fixed features [B, D]
  losses           losses.compute_losses forward + its gradient w.r.t. the
                   model's outputs (fixed outputs of one forward pass)
  grad             the whole step minus the optimizer apply
                   (loop.make_train_iteration with an optimizer that only
                   reads the gradients)
  apply            optimizer.apply_gradients of fixed gradients
  step             the real train iteration
Derived: backbone_bwd = backbone_fwd_bwd - backbone_fwd; other heads
(classifiers, auxiliary trunks) + glue = grad - backbone_fwd_bwd -
ver_heads - losses. Sub-graphs run alone lose the overlap of the whole
graph (two inter-op threads), so the parts need not add up to `step`.

--mode=candidates: variants of the whole step, each in its own process
(thread settings and oneDNN act at start-up), driven through a pipe in
alternating rounds so that one works while the others wait; the ratio to
the first variant is the median over rounds. A variant is
name=key:value,...: jit (XLA on the replica step), intra / inter (thread
pools; 0 = TF's default), onednn (TF_ENABLE_ONEDNN_OPTS), deterministic
(tf.config.experimental.enable_op_determinism, on in real runs by
train.deterministic), fused_bn (model.fused_batchnorm: the backbone's
BatchNormalization through FusedBatchNormV3), distinct (train.distinct_pairs).
Profile mode also times the verification heads alone with XLA and with
each repeated positive pair computed once with a weight (`dedup`), and
checks that the dedup form's loss and gradients equal the repeated form's
with dropout off.

  python bench/step_profile.py --mode=profile \
      --cases=googlenet:32,googlenet:128,mobilenet_v1:128
  python bench/step_profile.py --mode=candidates --cases=googlenet:32
"""

import collections
import glob
import os
import re
import statistics
import tempfile
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import keras_reid  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import  # first: oneDNN on (keras_reid/onednn.py)
import tensorflow as tf

from bench import training_throughput  # pylint: disable=g-import-not-at-top
from keras_reid import cpu_kind  # pylint: disable=g-import-not-at-top
from keras_reid import losses  # pylint: disable=g-import-not-at-top
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top

_MODE = flags.DEFINE_enum("mode", "profile", ["profile", "candidates"],
                          "What to time.")
_CASES = flags.DEFINE_list(
    "cases", ["googlenet:32", "googlenet:128", "mobilenet_v1:128"],
    "backbone:batch pairs (batch = K x images_per_id).")
_SIZE = flags.DEFINE_string("size", "128x64", "HxW input size.")
_MOBILENET_ALPHA = flags.DEFINE_float(
    "mobilenet_alpha", 0.5, "MobileNet width (configs/viper_cpu.py's 0.5).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Alternating rounds.")
_CALLS = flags.DEFINE_integer("calls", 2, "Calls per timing.")
_VARIANTS = flags.DEFINE_multi_string(
    "variant", ["base=", "xla=jit:1", "inter1=inter:1", "intra1=intra:1",
                "onednn_off=onednn:0", "deterministic=deterministic:1",
                "fused_bn=fused_bn:1", "distinct=distinct:1"],
    "Candidates: name=key:value,... (first = reference).")
_OP_TOP = flags.DEFINE_integer(
    "op_top", 12, "Profile mode: also trace the step with the TF profiler "
    "and list this many op types by time (0 = no trace).")
_PROFILE_OPTIONS = flags.DEFINE_string(
    "profile_options", "", "Profile mode: the step's options as a "
    "variant's, e.g. fused_bn:1,distinct:1 (default: neither).")
_SERVE = flags.DEFINE_string("serve", "", "Internal: serve this variant's "
                             "case (backbone:batch|spec) on stdin/stdout.")

VER_PREFIXES = ("", "aux1_", "aux2_")


def _case(case):
  backbone, batch = case.split(":")
  h, w = (int(v) for v in _SIZE.value.split("x"))
  m = training_throughput._M.value  # pylint: disable=protected-access
  return backbone, h, w, int(batch) // m, m


def _build(case, jit=False, distinct_pairs=False, fused_batchnorm=False):
  backbone, h, w, k, m = _case(case)
  alpha = _MOBILENET_ALPHA.value if backbone != "googlenet" else 0.25
  return training_throughput.build_step(backbone, h, w, k, m, jit, "float32",
                                        alpha=alpha,
                                        distinct_pairs=distinct_pairs,
                                        fused_batchnorm=fused_batchnorm)


def _timer(fn):
  """run() -> seconds of one call of fn (after two warm-up calls)."""
  fn()
  fn()

  def run():
    start = time.perf_counter()
    for _ in range(_CALLS.value):
      out = fn()
    tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t,
                          out)
    return (time.perf_counter() - start) / _CALLS.value
  return run


def _alternate(runs):
  """Median seconds per call of each run(), timed in alternating rounds."""
  seconds = {name: [] for name in runs}
  for _ in range(_REPEATS.value):
    for name, run in runs.items():
      seconds[name].append(run())
  return {name: statistics.median(s) for name, s in seconds.items()}


class _GradientSink:
  """Stands in for the optimizer: reads every gradient, applies nothing."""

  def __init__(self):
    self.sink = tf.Variable(0.0)

  def apply_gradients(self, pairs):
    self.sink.assign(tf.add_n([tf.reduce_sum(tf.reshape(g, [-1])[:1])
                               for g, _ in pairs]))


def ver_head_layers(model):
  """[(pair dropout, subtract, relu, dense)] of the model's verification heads."""
  names = ("ver_dropout", "ver_subtract", "ver_relu", "verifier")
  layer_names = {layer.name for layer in model.layers}
  return [tuple(model.get_layer(f"{p}{n}") for n in names)
          for p in VER_PREFIXES if f"{p}verifier" in layer_names]


def unique_pairs(pair_i, pair_j, pair_same):
  """The distinct pairs of `pipeline.pair_indices` and their copy counts.

  Returns (pair_i [U], pair_j [U], pair_same [U], count float32 [U]):
  sum(count * f(pair)) / sum(count) is the mean of f over the repeated
  pairs.
  """
  keys = pair_i.astype(np.int64) * (1 << 20) + pair_j
  _, first, count = np.unique(keys, return_index=True, return_counts=True)
  return (pair_i[first], pair_j[first], pair_same[first],
          count.astype(np.float32))


def ver_heads_fn(heads, features, pairs, *, training, weighted=False,
                 jit=False):
  """() -> (loss, grads): the verification heads on fixed features.

  features: [B, D] per head; pairs: (pair_i, pair_j, pair_same[, count]);
  with `weighted`, the loss is the count-weighted mean over the pairs.
  """
  variables = [v for head in heads for layer in head
               for v in layer.trainable_variables]
  sources = list(features) + variables

  def fn():
    with tf.GradientTape() as tape:
      tape.watch(features)
      total = 0.0
      for (dropout, subtract, relu, dense), feature in zip(heads, features):
        a, b = dropout([feature, pairs[0], pairs[1]], training=training)
        logits = dense(relu(subtract([a, b])))
        if weighted:
          ce = tf.keras.losses.sparse_categorical_crossentropy(
              tf.cast(pairs[2], tf.int32), logits, from_logits=True)
          total += tf.reduce_sum(pairs[3] * ce) / tf.reduce_sum(pairs[3])
        else:
          total += losses.verification_loss(logits, pairs[2])
    return total, tape.gradient(total, sources)
  return tf.function(fn, jit_compile=jit)


def profile(case):
  # The step's options (fused_bn, distinct); thread and oneDNN settings are
  # the process's (TF_ENABLE_ONEDNN_OPTS).
  _, settings = _parse_variant("profile=" + _PROFILE_OPTIONS.value)
  step = _build(case, distinct_pairs=bool(settings["distinct"]),
                fused_batchnorm=bool(settings["fused_bn"]))
  model, batch = step["model"], step["batch"]
  iteration, iterator = step["iteration"], step["iterator"]
  backbone = model.get_layer("backbone")
  images = tf.constant(batch["images"])
  rng = np.random.default_rng(1)
  inputs = {k: tf.constant(batch[k]) for k in ("images", "pair_i", "pair_j")}
  outputs = {k: tf.cast(v, tf.float32)
             for k, v in model(inputs, training=True).items()}
  feature_out = backbone(images, training=True)
  cotangents = tf.nest.map_structure(
      lambda t: tf.constant(rng.normal(size=t.shape).astype(np.float32)),
      feature_out)
  bb_vars = backbone.trainable_variables

  @tf.function
  def backbone_fwd():
    return tf.nest.map_structure(tf.reduce_sum,
                                 backbone(images, training=True))

  @tf.function
  def backbone_fwd_bwd():
    with tf.GradientTape() as tape:
      out = backbone(images, training=True)
    grads = tape.gradient(out, bb_vars, output_gradients=cotangents)
    return [tf.reduce_sum(g) for g in grads]

  heads = ver_head_layers(model)
  features = [tf.constant(rng.normal(size=(images.shape[0],
                                           h[3].kernel.shape[0])).astype(
                                               np.float32)) for h in heads]
  pairs = tuple(tf.constant(batch[k]) for k in ("pair_i", "pair_j",
                                                 "pair_same"))
  ver = ver_heads_fn(heads, features, pairs, training=True)
  labels = tf.constant(batch["labels"])
  loss_inputs = {k: v for k, v in outputs.items()}

  @tf.function
  def losses_fwd_bwd():
    with tf.GradientTape() as tape:
      tape.watch(loss_inputs)
      terms = losses.compute_losses(loss_inputs, labels, pairs[2],
                                    **step["weights"])
    return terms["total"], tape.gradient(terms["total"], loss_inputs)

  grad_only = training_throughput.loop.make_train_iteration(
      model, _GradientSink(), tf.distribute.get_strategy(), step["weights"],
      jit_compile=False, weight_decay=step["weight_decay"])
  variables = model.trainable_variables
  optimizer = step["optimizer"]
  optimizer.build(variables)
  fixed_grads = [tf.constant(1e-6 * rng.normal(size=v.shape).astype(
      np.float32)) for v in variables]

  @tf.function
  def apply():
    optimizer.apply_gradients(zip(fixed_grads, variables))
    return optimizer.iterations

  runs = dict(
      input=_timer(lambda: next(iterator)),
      backbone_fwd=_timer(backbone_fwd),
      backbone_fwd_bwd=_timer(backbone_fwd_bwd),
      ver_heads=_timer(ver),
      losses=_timer(losses_fwd_bwd),
      grad=_timer(lambda: grad_only(iterator)),
      apply=_timer(apply),
      step=_timer(lambda: iteration(iterator)["loss/total"]))
  t = _alternate(runs)
  t["backbone_bwd"] = t["backbone_fwd_bwd"] - t["backbone_fwd"]
  t["other_heads_and_glue"] = (t["grad"] - t["backbone_fwd_bwd"]
                               - t["ver_heads"] - t["losses"])
  b = int(images.shape[0])
  print(f"\n{case} {_SIZE.value} float32, {len(heads)} ver heads over "
        f"{int(pairs[0].shape[0])} pairs: step {t['step'] * 1e3:.0f} ms = "
        f"{b / t['step']:.1f} img/s", flush=True)
  print("| phase | ms | % of step |\n|---|---|---|")
  for name in ("input", "backbone_fwd", "backbone_bwd", "ver_heads", "losses",
               "other_heads_and_glue", "grad", "apply", "step"):
    print(f"| {name} | {t[name] * 1e3:.1f} | "
          f"{100 * t[name] / t['step']:.1f} |", flush=True)
  if _OP_TOP.value:
    print_op_times(lambda: float(iteration(iterator)["loss/total"]), t["step"])
  ver_candidates(step, heads, features)


_OP_EVENT = re.compile(r"^(\S+):(\w+)$")  # "<op name>:<op type>"


def op_times(fn, calls=2):
  """{(pass, op type): seconds per call} of fn's TF ops, from a profile.

  The TF profiler's host trace: every op event "<name>:<type>" on the
  executor threads (not their Eigen shards), summed (two inter-op threads can overlap, so the sum
  may exceed the wall time); pass is "bwd" for ops under gradient_tape/.
  """
  with tempfile.TemporaryDirectory() as logdir:
    tf.profiler.experimental.start(logdir)
    for _ in range(calls):
      fn()
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    with open(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"),
                        recursive=True)[0], "rb") as f:
      space.ParseFromString(f.read())
  totals = collections.Counter()
  for plane in space.planes:
    for line in plane.lines:
      if "Eigen" in line.name:  # intra-op shards of the ops counted below
        continue
      for event in line.events:
        name = plane.event_metadata[event.metadata_id].name
        match = _OP_EVENT.match(name)
        if match and "::" not in name:  # not ExecutorState::Process etc.
          kind = "bwd" if "gradient_tape/" in match.group(1) else "fwd"
          totals[(kind, match.group(2))] += event.duration_ps * 1e-12 / calls
  return totals


def print_op_times(fn, step_seconds):
  totals = op_times(fn)
  op_ms = sum(totals.values()) * 1e3
  print(f"ops by time (TF profiler, sum over threads; {op_ms:.0f} ms of "
        "ops per step):\n| pass | op type | ms | % of step "
        "|\n|---|---|---|---|")
  for (kind, op), seconds in totals.most_common(_OP_TOP.value):
    print(f"| {kind} | {op} | {seconds * 1e3:.1f} | "
          f"{100 * seconds / step_seconds:.1f} |", flush=True)


def ver_candidates(step, heads, features):
  """The verification heads alone: XLA, dedup; dedup == repeated check."""
  batch = step["batch"]
  pairs = tuple(tf.constant(batch[k]) for k in ("pair_i", "pair_j",
                                                 "pair_same"))
  unique = tuple(tf.constant(a) for a in unique_pairs(
      batch["pair_i"], batch["pair_j"], batch["pair_same"]))
  # Equality with dropout off: the forms differ only in summation order.
  rep_loss, rep_grads = ver_heads_fn(heads, features, pairs,
                                     training=False)()
  ded_loss, ded_grads = ver_heads_fn(heads, features, unique, training=False,
                                     weighted=True)()
  loss_diff = abs(float(rep_loss) - float(ded_loss))
  dense = tf.convert_to_tensor
  grad_diff = max(float(tf.reduce_max(tf.abs(dense(a) - dense(b))) /
                        (tf.reduce_max(tf.abs(dense(a))) + 1e-30))
                  for a, b in zip(rep_grads, ded_grads))
  runs = dict(
      repeated=_timer(ver_heads_fn(heads, features, pairs, training=True)),
      repeated_xla=_timer(ver_heads_fn(heads, features, pairs, training=True,
                                       jit=True)),
      dedup=_timer(ver_heads_fn(heads, features, unique, training=True,
                                weighted=True)),
      dedup_xla=_timer(ver_heads_fn(heads, features, unique, training=True,
                                    weighted=True, jit=True)))
  t = _alternate(runs)
  print(f"ver heads alone ({int(pairs[0].shape[0])} repeated pairs, "
        f"{int(unique[0].shape[0])} distinct); dropout off: |loss diff| "
        f"{loss_diff:.2e} (loss {float(rep_loss):.4f}), max relative grad "
        f"diff {grad_diff:.2e}")
  for name, s in t.items():
    print(f"  {name}: {s * 1e3:.1f} ms ({t['repeated'] / s:.2f}x repeated)",
          flush=True)


def _parse_variant(text):
  name, _, spec = text.partition("=")
  settings = dict(jit=0, intra=0, inter=0, onednn=1, deterministic=0,
                  fused_bn=0, distinct=0)
  for item in filter(None, spec.split(",")):
    key, value = item.split(":")
    if key not in settings:
      raise ValueError(f"--variant={text!r}: unknown key {key!r}; expected "
                       f"one of {sorted(settings)}.")
    settings[key] = int(value)
  return name, settings


def serve(text):
  """A child: builds one variant, then times n steps per line of stdin."""
  case, spec = text.split("|")
  _, settings = _parse_variant(spec)
  tf.config.threading.set_intra_op_parallelism_threads(settings["intra"])
  tf.config.threading.set_inter_op_parallelism_threads(settings["inter"])
  if settings["deterministic"]:
    tf.config.experimental.enable_op_determinism()
  step = _build(case, jit=bool(settings["jit"]),
                distinct_pairs=bool(settings["distinct"]),
                fused_batchnorm=bool(settings["fused_bn"]))
  iteration, iterator = step["iteration"], step["iterator"]
  for _ in range(2):
    float(iteration(iterator)["loss/total"])
  print("ready", flush=True)
  for line in sys.stdin:
    start = time.perf_counter()
    for _ in range(int(line)):
      values = iteration(iterator)
    float(values["loss/total"])
    print(time.perf_counter() - start, flush=True)


def candidates(case):
  children = {}
  for text in _VARIANTS.value:
    name, settings = _parse_variant(text)
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=str(settings["onednn"]))
    child = subprocess.Popen(
        [sys.executable, __file__, f"--serve={case}|{text}",
         f"--size={_SIZE.value}",
         f"--mobilenet_alpha={_MOBILENET_ALPHA.value}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    status = child.stdout.readline().strip()
    if status != "ready":
      raise RuntimeError(f"variant {text!r} did not start: {status!r}")
    children[name] = child

  def runner(child):
    def run():
      child.stdin.write(f"{_CALLS.value}\n")
      child.stdin.flush()
      return float(child.stdout.readline()) / _CALLS.value
    return run
  seconds = {name: [] for name in children}
  for _ in range(_REPEATS.value):
    for name, child in children.items():
      seconds[name].append(runner(child)())
  reference = next(iter(children))
  batch = _case(case)[3] * _case(case)[4]
  print(f"\n{case} {_SIZE.value} float32 whole step, {_REPEATS.value} "
        f"alternating rounds of {_CALLS.value} steps (median):")
  print(f"| variant | img/s | x {reference} |\n|---|---|---|")
  for name, s in seconds.items():
    ratios = [r / x for r, x in zip(seconds[reference], s)]
    print(f"| {name} | {batch / statistics.median(s):.1f} | "
          f"{statistics.median(ratios):.2f} |", flush=True)
  for child in children.values():
    child.stdin.close()
  for child in children.values():
    try:
      child.wait(timeout=60)
    except subprocess.TimeoutExpired:  # seen: TF's exit hanging
      child.kill()


def main(argv):
  del argv
  if _SERVE.value:
    serve(_SERVE.value)
    return
  cpu = cpu_kind.describe()
  print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{cpu['model'] or '?'}, {os.cpu_count()} cores, "
        f"{' '.join(cpu['flags'])}, TF {tf.__version__}", flush=True)
  for case in _CASES.value:
    (profile if _MODE.value == "profile" else candidates)(case)
    tf.keras.backend.clear_session()


if __name__ == "__main__":
  app.run(main)
