"""Graph-regularised dictionary learning (GRDL), the co-training subspace.

Paper notation (columns are images): Y in R^{dim x N}, dictionary
D in R^{dim x K} (K atoms d_k), codes Z in R^{K x N} (columns z_i), graph W
(see graph.py) with Laplacian L = Deg - W:

    min_{D,Z} ||Y - D Z||_F^2 + lam * sum_ij W_ij ||z_i - z_j||^2
    s.t. ||d_k||_2^2 <= 1 for every atom.

For symmetric W the graph term is sum_ij W_ij ||z_i - z_j||^2
= 2 tr(Z L Z^T), so with lam' = 2 lam:

  - Z-step (exact in Z for fixed D): the Sylvester equation
        (D^T D) Z + lam' Z L = D^T Y.
    With D^T D = U S U^T (K x K, small) and Zt = U^T Z, row i of Zt solves
    the sparse SPD system (s_i I + lam' L) zt_i = (U^T D^T Y)_i, by
    Jacobi-preconditioned conjugate gradients warm-started from U^T Z_prev
    (CG started anywhere never increases the quadratic it minimises, so an
    inexact solve still never increases the objective). Directions with
    s_i <= rcond * max(s) (degenerate or more atoms than dimensions) carry
    nothing of D Z: their rows are set to 0, which minimises the graph term
    exactly; no ridge is added.
  - D-step: block-coordinate descent over atoms on
        tr(D^T D A) - 2 tr(D^T B),  A = Z Z^T, B = Y Z^T,
    each atom exactly minimised and projected onto the unit ball (Mairal et
    al. 2009, Algorithm 2), warm-started from the previous D.

The public API uses the package's row convention: `features` is Y^T
([N, dim]), `codes` is Z^T ([N, K]). Everything is float64 inside.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Callable

from absl import logging
import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import threadpoolctl


def limit_blas_threads(num: int | None):
  """Context limiting BLAS / LAPACK threads (None: leave them as they are).

  The solver is mostly chains of small BLAS calls (CG's 1-D dot products,
  LAPACK's eigh of D^T D, per-atom matrix-vector products), where threading
  costs more than it gives; on 2 busy cores it was ruinous (measured: ddot
  of 20,000 doubles 19 ms threaded vs 3 us on one thread; eigh of a
  512 x 512 matrix 9.3 s vs 0.28 s). Its few large GEMMs lose little on one
  thread. Hence the solver's default of 1.
  """
  if num is None:
    return contextlib.nullcontext()
  return threadpoolctl.threadpool_limits(num, user_api="blas")


@dataclasses.dataclass
class GRDLResult:
  """What `grdl` returns.

  Attributes:
    dictionary: [dim, K] float64, every column of norm <= 1 (D).
    codes: [N, K] float64, one row per image (Z^T), the Z-step solution
      for `dictionary`.
    objective: the objective at the initial dictionary with its optimal
      codes, then after each iteration (D-step, then Z-step); never
      increases.
    objective_after_dictionary: the objective after each iteration's D-step
      (between objective[i] and objective[i + 1]).
    iterations: iterations run.
    converged: True when the relative decrease fell under `tol`.
    seconds: wall time of each iteration.
  """
  dictionary: np.ndarray
  codes: np.ndarray
  objective: list[float]
  objective_after_dictionary: list[float]
  iterations: int
  converged: bool
  seconds: list[float]


def _features64(features) -> np.ndarray:
  y = np.asarray(features, np.float64)
  if y.ndim != 2:
    raise ValueError(f"features must be [N, dim], got shape {y.shape}.")
  return y


def _check_lap(lap, n: int) -> sp.csr_matrix:
  if lap.shape != (n, n):
    raise ValueError(
        f"The Laplacian is {lap.shape}, expected ({n}, {n}) for {n} images; "
        "build it from the same features with graph.laplacian.")
  return sp.csr_matrix(lap, dtype=np.float64)


def graph_term(codes, lap) -> float:
  """sum_ij W_ij ||z_i - z_j||^2 = 2 tr(Z L Z^T); codes [N, K], lap [N, N]."""
  z = np.asarray(codes, np.float64)
  return 2.0 * float(np.sum(z * (lap @ z)))


def objective(features, dictionary, codes, lap, lam: float) -> float:
  """||Y - D Z||_F^2 + lam * sum_ij W_ij ||z_i - z_j||^2, computed directly.

  Args:
    features: [N, dim] (Y^T).
    dictionary: [dim, K] (D).
    codes: [N, K] (Z^T).
    lap: [N, N] sparse Laplacian of W.
    lam: the graph weight lambda.
  """
  y = _features64(features)
  z = np.asarray(codes, np.float64)
  resid = y - z @ np.asarray(dictionary, np.float64).T
  return float(np.sum(resid * resid)) + lam * graph_term(z, lap)


def _objective_from_grams(yy: float, d, a, b, codes, lap, lam) -> float:
  """Objective from A = Z Z^T, B = Y Z^T (no [dim, N] residual)."""
  fit = yy - 2.0 * np.sum(d * b) + np.sum((d.T @ d) * a)
  return float(fit) + lam * graph_term(codes, lap)


def _solve_rotated(s, bt, lap, lam, zt0, rtol, maxiter, rcond, stats):
  """Rows of Zt: (s_i I + 2 lam L) zt_i = bt_i. Returns (zt, unconverged)."""
  zt = np.zeros_like(bt)
  keep = s > rcond * max(float(s.max()), 0.0)
  stats["zero_rows"] = stats.get("zero_rows", 0) + int((~keep).sum())
  if lam == 0:
    zt[keep] = bt[keep] / s[keep, None]
    return zt, 0
  lapp = (2.0 * lam) * lap
  deg = lapp.diagonal()
  unconverged = 0
  n = bt.shape[1]
  counter = [0]

  def count(_):
    counter[0] += 1

  for i in np.flatnonzero(keep):
    si = float(s[i])
    op = spla.LinearOperator(
        (n, n), matvec=lambda x, si=si: si * x + lapp @ x, dtype=np.float64)
    inv_diag = 1.0 / (si + deg)
    prec = spla.LinearOperator(
        (n, n), matvec=lambda x, p=inv_diag: p * x, dtype=np.float64)
    x0 = None if zt0 is None else zt0[i]
    zt[i], info = spla.cg(op, bt[i], x0=x0, rtol=rtol, maxiter=maxiter,
                          M=prec, callback=count)
    unconverged += info > 0
  stats["cg_iterations"] = stats.get("cg_iterations", 0) + counter[0]
  stats["unconverged_rows"] = stats.get("unconverged_rows", 0) + unconverged
  return zt, unconverged


def solve_codes(dictionary, features, lap, lam: float, *, init_codes=None,
                rtol: float = 1e-6, maxiter: int | None = 300,
                rcond: float = 1e-10, stats: dict | None = None,
                blas_threads: int | None = 1) -> np.ndarray:
  """Z-step: codes minimising the objective for a fixed dictionary.

  Solves (D^T D) Z + 2 lam Z L = D^T Y (the factor 2: see the module
  docstring) row by row in the eigenbasis of D^T D.

  Args:
    dictionary: [dim, K] (D).
    features: [N, dim] (Y^T).
    lap: [N, N] sparse Laplacian.
    lam: graph weight lambda (>= 0); 0 gives least-squares codes.
    init_codes: [N, K] warm start (e.g. the previous Z^T); None starts CG
      from the least-squares codes.
    rtol: CG relative residual tolerance per row.
    maxiter: CG iteration cap per row (None: SciPy's default, 10 N).
    rcond: eigenvalues of D^T D under rcond * max get code 0 (see module
      docstring).
    stats: if given, a dict that receives the counts "cg_iterations" (all
      rows together), "unconverged_rows" and "zero_rows" (added to any
      values already there).
    blas_threads: BLAS threads while solving (see `limit_blas_threads`);
      None leaves the library's setting.

  Returns:
    codes: [N, K] float64 (Z^T).
  """
  d = np.asarray(dictionary, np.float64)
  y = _features64(features)
  lap = _check_lap(lap, y.shape[0])
  if lam < 0:
    raise ValueError(f"lam must be >= 0, got {lam}.")
  with limit_blas_threads(blas_threads):
    s, u = scipy.linalg.eigh(d.T @ d)
    s = np.maximum(s, 0.0)
    bt = (d @ u).T @ y.T  # [K, N] = U^T D^T Y
    stats = {} if stats is None else stats
    if init_codes is None:
      zt0, _ = _solve_rotated(s, bt, lap, 0.0, None, rtol, maxiter, rcond, {})
    else:
      zt0 = u.T @ np.asarray(init_codes, np.float64).T
    zt, unconverged = _solve_rotated(s, bt, lap, lam, zt0, rtol, maxiter, rcond,
                                     stats)
    if unconverged:
      logging.warning(
          "GRDL Z-step: CG reached maxiter=%s on %d of %d rows (objective "
          "still decreased; raise maxiter or rtol for exact codes).",
          maxiter, unconverged, len(s))
    return (u @ zt).T


def _dictionary_step(a, b, d, sweeps: int, tol: float) -> np.ndarray:
  """Atom-wise exact minimisation of tr(D^T D A) - 2 tr(D^T B), ||d_k|| <= 1."""
  d = np.asfortranarray(d, np.float64).copy()
  diag = np.diag(a)
  tiny = 1e-12 * max(float(diag.max()), 1e-300)
  for _ in range(sweeps):
    d_old = d.copy()
    for j in range(d.shape[1]):
      if diag[j] <= tiny:  # unused atom: it does not enter the objective
        continue
      col = d[:, j] + (b[:, j] - d @ a[:, j]) / diag[j]
      d[:, j] = col / max(1.0, float(np.linalg.norm(col)))
    if np.linalg.norm(d - d_old) <= tol * max(np.linalg.norm(d), 1e-300):
      break
  return d


def update_dictionary(features, codes, dictionary, *, sweeps: int = 5,
                      tol: float = 1e-6, blas_threads: int | None = 1
                      ) -> np.ndarray:
  """D-step: min ||Y - D Z||_F^2 s.t. ||d_k||_2 <= 1, from `dictionary`.

  Args:
    features: [N, dim] (Y^T).
    codes: [N, K] (Z^T).
    dictionary: [dim, K] warm start (D).
    sweeps: passes over the atoms (each pass never increases the fit).
    tol: stop when a pass moves D by less than tol * ||D||_F.
    blas_threads: as in `solve_codes`.

  Returns:
    dictionary: [dim, K] float64, columns of norm <= 1.
  """
  y = _features64(features)
  z = np.asarray(codes, np.float64)
  with limit_blas_threads(blas_threads):
    return _dictionary_step(z.T @ z, y.T @ z, dictionary, sweeps, tol)


def initial_dictionary(features, num_atoms: int, seed: int = 0) -> np.ndarray:
  """[dim, K] float64: randomly chosen images, scaled to unit norm."""
  y = _features64(features)
  rng = np.random.default_rng(seed)
  n = y.shape[0]
  pick = rng.choice(n, num_atoms, replace=num_atoms > n)
  d = y[pick].T.copy()
  norms = np.linalg.norm(d, axis=0)
  zero = norms == 0
  d[:, zero] = rng.standard_normal((d.shape[0], int(zero.sum())))
  return d / np.linalg.norm(d, axis=0)


def grdl(features, lap, num_atoms: int, lam: float, *, max_iter: int = 20,
         tol: float = 1e-4, seed: int = 0, init_dictionary=None,
         cg_rtol: float = 1e-6, cg_maxiter: int | None = 300,
         dictionary_sweeps: int = 5,
         callback: Callable[[int, float], None] | None = None,
         blas_threads: int | None = 1) -> GRDLResult:
  """Alternates D-steps and Z-steps until the objective stops decreasing.

  Starts from a dictionary and its optimal codes, then each iteration runs a
  D-step and a Z-step, so the codes returned solve the Z-step for the
  dictionary returned.

  Args:
    features: [N, dim] target features (Y^T), any float dtype.
    lap: [N, N] sparse Laplacian L = Deg - W of the cross-camera graph
      (graph.laplacian(graph.cross_camera_knn_graph(...))).
    num_atoms: K.
    lam: lambda of sum_ij W_ij ||z_i - z_j||^2 (= 2 lam tr(Z L Z^T)).
    max_iter: iteration cap.
    tol: stop when (f_prev - f) <= tol * f_prev.
    seed: initial dictionary draw (`initial_dictionary`).
    init_dictionary: [dim, K] start instead of the random draw (e.g. the
      previous round's dictionary); columns are projected onto the unit ball.
    cg_rtol, cg_maxiter: Z-step CG settings (see `solve_codes`).
    dictionary_sweeps: D-step passes over the atoms per iteration.
    callback: called as callback(iteration, objective) after each
      iteration (1-based), e.g. to write TensorBoard scalars.
    blas_threads: BLAS threads for the whole run (see `limit_blas_threads`);
      None leaves the library's setting.

  Returns:
    GRDLResult (dictionary [dim, K], codes [N, K], objective history, ...).
  """
  y = _features64(features)
  lap = _check_lap(lap, y.shape[0])
  if num_atoms < 1:
    raise ValueError(f"num_atoms must be >= 1, got {num_atoms}.")
  if lam < 0:
    raise ValueError(f"lam must be >= 0, got {lam}.")
  if init_dictionary is None:
    d = initial_dictionary(y, num_atoms, seed)
  else:
    d = np.array(init_dictionary, np.float64)
    if d.shape != (y.shape[1], num_atoms):
      raise ValueError(
          f"init_dictionary is {d.shape}, expected ({y.shape[1]}, "
          f"{num_atoms}) = (feature dim, num_atoms).")
    d /= np.maximum(1.0, np.linalg.norm(d, axis=0))
  with limit_blas_threads(blas_threads):
    yy = float(np.sum(y * y))
    # Codes first, so that the returned codes are always optimal for the
    # returned dictionary (what the pseudo labels are computed from).
    z = solve_codes(d, y, lap, lam, rtol=cg_rtol, maxiter=cg_maxiter,
                    blas_threads=None)
    a, b = z.T @ z, y.T @ z
    history = [_objective_from_grams(yy, d, a, b, z, lap, lam)]
    after_dictionary, seconds = [], []
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
      start = time.perf_counter()
      d = _dictionary_step(a, b, d, dictionary_sweeps, 1e-6)
      after_dictionary.append(_objective_from_grams(yy, d, a, b, z, lap, lam))
      z = solve_codes(d, y, lap, lam, init_codes=z, rtol=cg_rtol,
                      maxiter=cg_maxiter, blas_threads=None)
      a, b = z.T @ z, y.T @ z
      history.append(_objective_from_grams(yy, d, a, b, z, lap, lam))
      seconds.append(time.perf_counter() - start)
      logging.info("GRDL iteration %d: objective %.6g (%.1f s)", it,
                   history[-1], seconds[-1])
      if callback is not None:
        callback(it, history[-1])
      if history[-2] - history[-1] <= tol * abs(history[-2]):
        converged = True
        break
  return GRDLResult(dictionary=d, codes=z, objective=history,
                    objective_after_dictionary=after_dictionary, iterations=it,
                    converged=converged, seconds=seconds)
