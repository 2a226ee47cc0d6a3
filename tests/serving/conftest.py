"""Shared fixture: one tiny model exported once per test session."""

import dataclasses

import keras
import numpy as np
import pytest

from keras_reid import schema
from keras_reid.models import builders
from keras_reid.serving import saved_model

IMAGE_SIZE = (64, 32)  # (H, W): mobilenet_v1 needs >= 32 per side


def tiny_model_config():
  model_config = schema.base_config().model
  model_config.backbone = "mobilenet_v1"
  model_config.alpha = 0.25
  model_config.weights = ""
  return model_config


@dataclasses.dataclass
class Exported:
  path: str             # <base>/1
  base: str
  embedder: keras.Model
  pair_scorer: keras.Model
  normalization: str

  @staticmethod
  def images(seed, n, h, w):
    """uint8 [n, h, w, 3] noise, a different brightness per image."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 160, (n, h, w, 3)) + (40 * np.arange(n) % 96)[
        :, None, None, None]
    return images.astype(np.uint8)


def _calibrate_batch_norm(model):
  """Sets BatchNorm moving statistics from one batch.

  A randomly initialised MobileNet with moving statistics (0, 1) shrinks its
  features to ~1e-11, below l2_normalize's epsilon; calibrated statistics
  give the unit-norm embeddings a trained model has.
  """
  bn_layers = [layer for layer in model._flatten_layers()  # pylint: disable=protected-access
               if isinstance(layer, keras.layers.BatchNormalization)]
  momenta = [bn.momentum for bn in bn_layers]
  for layer in bn_layers:
    layer.momentum = 0.0
  images = np.random.default_rng(0).uniform(-1, 1, (8,) + IMAGE_SIZE + (3,))
  model(images.astype(np.float32), training=True)
  for layer, momentum in zip(bn_layers, momenta):
    layer.momentum = momentum


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
  keras.utils.set_random_seed(0)
  model_config = tiny_model_config()
  training_model = builders.build_training_model(
      model_config, num_classes=2, input_shape=IMAGE_SIZE + (3,), seed=0)
  embedder = builders.build_embedder(training_model)
  _calibrate_batch_norm(embedder)
  pair_scorer = builders.build_pair_scorer(training_model)
  normalization = builders.normalization_for(model_config)
  base = str(tmp_path_factory.mktemp("export") / "reid")
  path = saved_model.export_saved_model(
      embedder, pair_scorer, export_base=base, image_size=IMAGE_SIZE,
      normalization=normalization)
  return Exported(path, base, embedder, pair_scorer, normalization)



@pytest.fixture(scope="session")
def exported_without_verify(exported, tmp_path_factory):
  """The same embedder exported as a model without a verification head is
  (no pair scorer: builders has none for a run with loss.ver_weight=0)."""
  base = str(tmp_path_factory.mktemp("export_embedding_only") / "reid")
  path = saved_model.export_saved_model(
      exported.embedder, None, export_base=base, image_size=IMAGE_SIZE,
      normalization=exported.normalization)
  return Exported(path, base, exported.embedder, None, exported.normalization)
