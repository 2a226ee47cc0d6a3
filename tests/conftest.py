"""Runs the suite on the TensorFlow kernels users get.

`import keras_reid` turns TensorFlow's oneDNN kernels on (keras_reid/onednn.py),
but only for a TensorFlow loaded after it; many test modules import
tensorflow first. Importing the package here, before pytest imports any test
module, makes every test run with oneDNN as the entry points do.
"""

import keras_reid  # noqa: F401  # pylint: disable=unused-import
