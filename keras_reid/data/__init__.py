"""Dataset readers, synthetic pedestrians and tf.data pipelines."""
