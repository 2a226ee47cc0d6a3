"""Tests for keras_reid.unsupervised.grdl.

Oracles: scipy.linalg.solve_sylvester (Z-step), numpy lstsq (lambda = 0 and
the singular Kronecker system), SciPy's SLSQP (D-step), the direct objective.
"""

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize

from keras_reid.unsupervised import graph
from keras_reid.unsupervised import grdl


def problem(seed=0, n=40, dim=8, ids=10, weighting="binary", k=3):
  """Clustered features from two cameras with a camera shift."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(ids, dim))
  pids = np.arange(n) % ids
  camids = (np.arange(n) // ids) % 2
  shift = rng.normal(size=dim)
  y = centres[pids] + 0.3 * rng.normal(size=(n, dim)) + camids[:, None] * shift
  is_a = graph.camera_a_mask(camids)
  w = graph.cross_camera_knn_graph(y, is_a, k, weighting=weighting)
  return y, graph.laplacian(w), pids, is_a


@pytest.mark.parametrize("lam", [0.01, 0.3, 5.0])
@pytest.mark.parametrize("weighting", ["binary", "heat"])
def test_z_step_matches_solve_sylvester(lam, weighting):
  y, lap, _, _ = problem(seed=int(lam * 100), weighting=weighting)
  d = grdl.initial_dictionary(y, 6, seed=1)
  ref = scipy.linalg.solve_sylvester(d.T @ d, 2 * lam * lap.toarray(),
                                     d.T @ y.T)
  z = grdl.solve_codes(d, y, lap, lam, rtol=1e-12, maxiter=5000)
  np.testing.assert_allclose(z.T, ref, atol=1e-8 * np.abs(ref).max())
  # Warm start from far away gives the same codes.
  z2 = grdl.solve_codes(d, y, lap, lam, init_codes=np.ones_like(z) * 3,
                        rtol=1e-12, maxiter=5000)
  np.testing.assert_allclose(z2, z, atol=1e-8 * np.abs(ref).max())


def test_lambda_zero_is_least_squares():
  y, lap, _, _ = problem(seed=3)
  d = grdl.initial_dictionary(y, 5, seed=2)
  z = grdl.solve_codes(d, y, lap, 0.0)
  ref, *_ = np.linalg.lstsq(d, y.T, rcond=None)
  np.testing.assert_allclose(z.T, ref, atol=1e-10)
  # And a whole GRDL run with lambda = 0 ends on least-squares codes of its D.
  res = grdl.grdl(y, lap, 5, 0.0, max_iter=5)
  ref, *_ = np.linalg.lstsq(res.dictionary, y.T, rcond=None)
  np.testing.assert_allclose(res.codes.T, ref, atol=1e-8)


def test_degenerate_dictionary_minimises_exactly():
  """More atoms than dimensions: D^T D is singular, codes still optimal."""
  y, lap, _, _ = problem(seed=4, n=16, dim=3, ids=4)
  d = grdl.initial_dictionary(y, 5, seed=0)
  lam = 0.2
  z = grdl.solve_codes(d, y, lap, lam, rtol=1e-12, maxiter=5000)
  # Oracle: minimum-norm solution of the singular Kronecker normal equations
  # (D^T D (x) I + 2 lam I (x) L) vec(Z^T) = vec((D^T Y)^T).
  n, k = y.shape[0], d.shape[1]
  big = (np.kron(d.T @ d, np.eye(n))
         + np.kron(np.eye(k), 2 * lam * lap.toarray()))
  sol, *_ = np.linalg.lstsq(big, (d.T @ y.T).ravel(), rcond=1e-12)
  best = grdl.objective(y, d, sol.reshape(k, n).T, lap, lam)
  np.testing.assert_allclose(grdl.objective(y, d, z, lap, lam), best,
                             rtol=1e-9)
  assert np.all(np.isfinite(z))


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("atoms", [4, 12])
def test_objective_never_increases_and_constraint_holds(seed, atoms):
  y, lap, _, _ = problem(seed=seed, dim=8)
  res = grdl.grdl(y, lap, atoms, 0.1 * (seed + 1), max_iter=15, tol=0,
                  seed=seed, cg_rtol=1e-8)
  assert res.iterations == 15 and not res.converged
  # Both half-steps: f(D0, Z0) >= f after D-step 1 >= f after Z-step 1 >= ...
  steps = [res.objective[0]]
  for after_d, after_z in zip(res.objective_after_dictionary,
                              res.objective[1:]):
    steps += [after_d, after_z]
  assert np.all(np.diff(steps) <= 1e-10 * steps[0]), np.diff(steps).max()
  assert steps[-1] < 0.9 * steps[0]
  assert np.all(np.linalg.norm(res.dictionary, axis=0) <= 1 + 1e-12)
  # The recorded (Gram-based) objective is the direct one.
  np.testing.assert_allclose(
      res.objective[-1],
      grdl.objective(y, res.dictionary, res.codes, lap, 0.1 * (seed + 1)),
      rtol=1e-9)


def test_inexact_cg_still_monotone():
  y, lap, _, _ = problem(seed=7)
  res = grdl.grdl(y, lap, 6, 1.0, max_iter=10, tol=0, cg_maxiter=2,
                  dictionary_sweeps=1)
  steps = [res.objective[0]]
  for after_d, after_z in zip(res.objective_after_dictionary,
                              res.objective[1:]):
    steps += [after_d, after_z]
  assert np.all(np.diff(steps) <= 1e-10 * steps[0])


def test_tolerance_stops():
  y, lap, _, _ = problem(seed=5)
  res = grdl.grdl(y, lap, 6, 0.1, max_iter=500, tol=1e-3)
  assert res.converged and res.iterations < 500
  assert len(res.objective) == res.iterations + 1 == len(res.seconds) + 1
  seen = []
  grdl.grdl(y, lap, 6, 0.1, max_iter=3, tol=0,
            callback=lambda i, f: seen.append((i, f)))
  assert [i for i, _ in seen] == [1, 2, 3]


def test_d_step_matches_slsqp():
  rng = np.random.default_rng(0)
  dim, k, n = 4, 3, 30
  y = 3 * rng.normal(size=(n, dim))  # big enough for the constraint to bind
  z = rng.normal(size=(n, k))
  d0 = grdl.initial_dictionary(y, k, seed=0)
  d = grdl.update_dictionary(y, z, d0, sweeps=2000, tol=1e-14)
  assert np.all(np.linalg.norm(d, axis=0) <= 1 + 1e-12)

  def fit(x):
    return np.sum((y.T - x.reshape(dim, k) @ z.T) ** 2)

  cons = [{"type": "ineq",
           "fun": lambda x, j=j: 1 - np.sum(x.reshape(dim, k)[:, j] ** 2)}
          for j in range(k)]
  ref = scipy.optimize.minimize(fit, d0.ravel(), method="SLSQP",
                                constraints=cons,
                                options={"ftol": 1e-14, "maxiter": 1000})
  assert ref.success
  np.testing.assert_allclose(fit(d.ravel()), ref.fun, rtol=1e-6)
  np.testing.assert_allclose(d, ref.x.reshape(dim, k), atol=1e-4)


def test_d_step_unconstrained_is_least_squares():
  rng = np.random.default_rng(1)
  y = 0.01 * rng.normal(size=(50, 6))  # small: the norm constraint is slack
  z = rng.normal(size=(50, 3))
  d = grdl.update_dictionary(y, z, np.eye(6, 3), sweeps=5000, tol=1e-15)
  ref, *_ = np.linalg.lstsq(z, y, rcond=None)
  np.testing.assert_allclose(d, ref.T, atol=1e-10)


def test_graph_term_shrinks_with_lambda():
  y, lap, _, _ = problem(seed=6)
  terms = [grdl.graph_term(grdl.grdl(y, lap, 6, lam, max_iter=10).codes, lap)
           for lam in (0.0, 0.1, 10.0)]
  assert terms[0] > terms[1] > terms[2]


def test_errors():
  y, lap, _, _ = problem()
  with pytest.raises(ValueError, match="Laplacian"):
    grdl.grdl(y[:-1], lap, 4, 0.1)
  with pytest.raises(ValueError, match="lam"):
    grdl.grdl(y, lap, 4, -1.0)
  with pytest.raises(ValueError, match="init_dictionary"):
    grdl.grdl(y, lap, 4, 0.1, init_dictionary=np.ones((3, 4)))


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
