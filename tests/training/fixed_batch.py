"""One fixed random K x M batch with its pairs, repeated: the input of
tests that run a fine-tuning step without a dataset."""

import numpy as np
import tensorflow as tf


def make_dataset(k: int, m: int, height: int, width: int) -> tf.data.Dataset:
  """The same batch forever: K identities x M images of noise (seed 0),
  labels 0..K-1, every pair of the batch (i < j) with its same-identity
  flag, camera 0."""
  rng = np.random.default_rng(0)
  images = rng.normal(size=(k * m, height, width, 3)).astype(np.float32)
  labels = np.repeat(np.arange(k), m).astype(np.int32)
  ii, jj = np.triu_indices(k * m, k=1)
  batch = dict(images=images, labels=labels,
               camids=np.zeros(k * m, np.int32),
               pair_i=ii.astype(np.int32), pair_j=jj.astype(np.int32),
               pair_same=(labels[ii] == labels[jj]).astype(np.float32))
  return tf.data.Dataset.from_tensors(batch).repeat()
