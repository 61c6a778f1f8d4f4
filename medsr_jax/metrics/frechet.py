"""The Fréchet distance between two sets of feature vectors (the statistic behind FID).

Reference spec §8.4: the author's `metrics/fid.py` is a copy of pytorch-fid. Each set of
features (n, d) is summarised by its mean mu and its unbiased covariance Sigma
(`np.cov(rowvar=False)`, ddof 1), and the distance between the two Gaussians is

  d^2 = ||mu_a - mu_b||^2 + Tr(Sigma_a + Sigma_b - 2 sqrtm(Sigma_a Sigma_b))

all in float64. Numerical rules (pytorch-fid's, spelt out):
  * a singular product (either covariance rank-deficient, as it always is when n <= d): the
    root is taken of (Sigma_a + 1e-6 I)(Sigma_b + 1e-6 I) instead; the traces of Sigma_a and
    Sigma_b stay unshifted, as pytorch-fid has it (so a set against itself gives -2 d 1e-6);
  * a (round-off) negative result is clamped to 0.

pytorch-fid only shifts when `scipy.linalg.sqrtm` comes back non-finite; scipy >= 1.16 returns a
finite but inaccurate root for singular products, so the shift is made whenever a covariance is
rank-deficient (numpy's `matrix_rank` tolerance on its eigenvalues).

How Tr sqrtm(A B) is computed (issue 12): not with `scipy.linalg.sqrtm` of the non-symmetric
product (a Schur method: 40 s at d = 2048 on two cores, and inaccurate when the product is
ill-conditioned), but from the symmetric matrix A^1/2 B A^1/2, which has the same eigenvalues as
A B (similar matrices): Tr sqrtm(A B) = sum_i sqrt(lambda_i(A^1/2 B A^1/2)), two `eigh` calls,
eigenvalues clipped at 0 (A, B are PSD: A B's spectrum is real and non-negative). No complex
root can arise, so pytorch-fid's imaginary-part check has nothing to check.
`frechet_distance` of n + m < d feature vectors (the per-subject FID: ~100 slices vs 2048
features) works in the span of the centred features: with Q (d, k) an orthonormal basis that
holds both sets' centred rows, (Sigma_a + eps I)(Sigma_b + eps I) is block diagonal in [Q, Q^perp]
and equals eps^2 I on Q^perp, so
  Tr sqrtm(...) = Tr sqrtm((Q^T Sigma_a Q + eps I)(Q^T Sigma_b Q + eps I)) + (d - k) eps,
exact, in O(d k^2) instead of O(d^3).

Uses: FID (Inception features; thesis §4.3.2) and the medical Fréchet distance of
`medsr_jax.evaluate.segmentation` (GAP'd U-Net encoder features).

  from medsr_jax.metrics import frechet
  d = frechet.frechet_distance(features_sr, features_hr)            # (n, d) and (m, d)
  mu, sigma = frechet.feature_statistics(features_hr)               # reuse the HR statistics
  d = frechet.frechet_from_statistics(*frechet.feature_statistics(features_sr), mu, sigma)

Run the checks with:
  .venv/bin/python -m pytest -q tests/test_dice_metrics.py tests/test_fid.py
"""

from __future__ import annotations

import numpy as np

from medsr_jax.errors import InputError

EPS = 1e-6             # pytorch-fid's diagonal offset for a singular product


def _as_features(features) -> np.ndarray:
  """(n, d) float64 features, n >= 2, finite (InputError otherwise)."""
  f = np.asarray(features)
  if f.ndim != 2:
    raise InputError(f"features must be (n, d), got shape {f.shape}")
  if f.shape[0] < 2:
    raise InputError(f"a covariance needs at least 2 feature vectors, got {f.shape[0]}")
  if f.shape[1] < 1:
    raise InputError("features must have at least one dimension")
  if not np.issubdtype(f.dtype, np.number) or np.iscomplexobj(f):
    raise InputError(f"features must be real numbers, got dtype {f.dtype}")
  f = f.astype(np.float64)
  if not np.all(np.isfinite(f)):
    raise InputError("features contain NaN or infinite values")
  return f


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
  """(mu (d,), sigma (d, d)) of (n, d) features: mean and np.cov(rowvar=False), float64.

  Needs n >= 2 finite rows (InputError otherwise).
  """
  f = _as_features(features)
  return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def _statistics(name: str, mu, sigma) -> tuple[np.ndarray, np.ndarray]:
  mu = np.atleast_1d(np.asarray(mu, np.float64))
  sigma = np.atleast_2d(np.asarray(sigma, np.float64))
  if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
    raise InputError(f"{name}: mu must be (d,) and sigma (d, d), got {mu.shape} and "
                     f"{sigma.shape}")
  if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
    raise InputError(f"{name}: statistics contain NaN or infinite values")
  return mu, sigma


def _full_rank(eigenvalues: np.ndarray) -> bool:
  """numpy's `matrix_rank(hermitian=True)` rule on the eigenvalues of a symmetric (d, d) matrix."""
  s = np.abs(eigenvalues)
  d = s.shape[0]
  return int(np.sum(s > s.max(initial=0.0) * d * np.finfo(np.float64).eps)) == d


def _symmetric(sigma: np.ndarray) -> np.ndarray:
  return (sigma + sigma.T) / 2.0


def _trace_sqrt_product(eig_a: tuple[np.ndarray, np.ndarray], sigma_b: np.ndarray,
                        shift: float) -> float:
  """Tr sqrtm((A + shift I)(B + shift I)) from A's eigendecomposition (w, u) and B, as the sum of
  the square roots of the eigenvalues of the symmetric (A + shift I)^1/2 (B + shift I) (A + shift
  I)^1/2 (same spectrum as the product)."""
  w, u = eig_a
  root_a = (u * np.sqrt(np.clip(w, 0.0, None) + shift)) @ u.T
  b = sigma_b + shift * np.eye(sigma_b.shape[0])
  lam = np.linalg.eigvalsh(_symmetric(root_a @ b @ root_a))
  return float(np.sum(np.sqrt(np.clip(lam, 0.0, None))))


def _finish(value: float) -> float:
  if not np.isfinite(value):
    raise ValueError("the Fréchet distance is not finite")
  return max(float(value), 0.0)


def frechet_from_statistics(mu_a, sigma_a, mu_b, sigma_b) -> float:
  """The Fréchet distance of N(mu_a, sigma_a) and N(mu_b, sigma_b) (rules: module docstring)."""
  mu_a, sigma_a = _statistics("set a", mu_a, sigma_a)
  mu_b, sigma_b = _statistics("set b", mu_b, sigma_b)
  if mu_a.shape != mu_b.shape:
    raise InputError(f"feature sizes differ: {mu_a.shape[0]} and {mu_b.shape[0]}")
  sigma_a, sigma_b = _symmetric(sigma_a), _symmetric(sigma_b)
  diff = mu_a - mu_b
  eig_a = np.linalg.eigh(sigma_a)
  full = _full_rank(eig_a[0]) and _full_rank(np.linalg.eigvalsh(sigma_b))
  root_trace = _trace_sqrt_product(eig_a, sigma_b, 0.0 if full else EPS)
  return _finish(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * root_trace)


def _frechet_low_rank(a: np.ndarray, b: np.ndarray) -> float:
  """The shifted (singular) distance of float64 features (n, d), (m, d) with n + m < d, computed
  in the span of the centred rows (module docstring); equal to `frechet_from_statistics`."""
  d = a.shape[1]
  mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
  ya = (a - mu_a) / np.sqrt(a.shape[0] - 1)  # Sigma_a = ya^T ya
  yb = (b - mu_b) / np.sqrt(b.shape[0] - 1)
  q, _ = np.linalg.qr(np.concatenate([ya, yb]).T)  # (d, n + m), orthonormal columns
  pa, pb = ya @ q, yb @ q
  sa, sb = _symmetric(pa.T @ pa), _symmetric(pb.T @ pb)
  k = q.shape[1]
  root_trace = _trace_sqrt_product(np.linalg.eigh(sa), sb, EPS) + (d - k) * EPS
  diff = mu_a - mu_b
  return _finish(diff @ diff + np.sum(ya * ya) + np.sum(yb * yb) - 2.0 * root_trace)


def frechet_distance(features_a, features_b) -> float:
  """The Fréchet distance between feature sets (n, d) and (m, d), n, m >= 2; float64.

  n + m < d (always singular, shifted): computed in the span of the features, O(d (n + m)^2);
  otherwise `frechet_from_statistics` of the two `feature_statistics`.
  """
  a = np.asarray(features_a)
  b = np.asarray(features_b)
  if a.ndim == 2 and b.ndim == 2 and a.shape[1] != b.shape[1]:
    raise InputError(f"feature sizes differ: {a.shape[1]} and {b.shape[1]}")
  a, b = _as_features(a), _as_features(b)
  if a.shape[0] + b.shape[0] < a.shape[1]:
    return _frechet_low_rank(a, b)
  return frechet_from_statistics(*feature_statistics(a), *feature_statistics(b))
