"""Unsupervised transfer to an unlabelled two-camera target.

NumPy / SciPy / scikit-learn only (no TensorFlow import), so that the
co-training maths can be tested and benchmarked without a model:

  graph.py          cross-camera kNN graph W and its Laplacian L = Deg - W
  grdl.py           graph-regularised dictionary learning (codes Z of Y)
  pseudo_labels.py  camera-A classes for camera-B images (hard or soft) and
                    their accuracy against hidden identities (monitoring only)
  clustering.py     DBSCAN clusters on the k-reciprocal Jaccard distance
                    (outliers unlabelled) and their quality against hidden
                    identities (monitoring only)

Every function takes features with one row per image ([N, dim], the
package's convention); the docstrings give the paper's column notation.
"""
