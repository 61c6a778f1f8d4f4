"""The Fréchet distance between two sets of feature vectors (the statistic behind FID).

Reference spec §8.4: the author's `metrics/fid.py` is a copy of pytorch-fid. Each set of
features (n, d) is summarised by its mean mu and its unbiased covariance Sigma
(`np.cov(rowvar=False)`, ddof 1), and the distance between the two Gaussians is

  d^2 = ||mu_a - mu_b||^2 + Tr(Sigma_a + Sigma_b - 2 sqrtm(Sigma_a Sigma_b))

with `scipy.linalg.sqrtm`, all in float64. Numerical rules (pytorch-fid's, spelt out):
  * a singular product (either covariance rank-deficient, as it always is when n <= d) or a
    non-finite square root: sqrtm is taken of (Sigma_a + 1e-6 I)(Sigma_b + 1e-6 I) instead;
    the traces of Sigma_a and Sigma_b stay unshifted, as pytorch-fid has it;
  * sqrtm may come back complex: ValueError when the largest |imaginary part| on its diagonal
    exceeds 1e-3, otherwise the real part is used;
  * a (round-off) negative result is clamped to 0.

pytorch-fid only shifts when the square root is non-finite; scipy >= 1.16 returns a finite but
inaccurate root for singular products, so the shift is also made when a covariance is
rank-deficient (`np.linalg.matrix_rank`, hermitian).

Uses: FID (Inception features; thesis §4.3.2) and the medical Fréchet distance of
`medsr_jax.evaluate.segmentation` (GAP'd U-Net encoder features).

  from medsr_jax.metrics import frechet
  d = frechet.frechet_distance(features_sr, features_hr)            # (n, d) and (m, d)
  mu, sigma = frechet.feature_statistics(features_hr)               # reuse the HR statistics
  d = frechet.frechet_from_statistics(*frechet.feature_statistics(features_sr), mu, sigma)

Run the checks with:
  .venv/bin/python -m pytest -q tests/test_dice_metrics.py
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from medsr_jax.errors import InputError

EPS = 1e-6             # pytorch-fid's diagonal offset for a singular product
IMAG_TOLERANCE = 1e-3  # pytorch-fid's tolerance for an imaginary diagonal in sqrtm


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
  """(mu (d,), sigma (d, d)) of (n, d) features: mean and np.cov(rowvar=False), float64.

  Needs n >= 2 finite rows (InputError otherwise).
  """
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


def _full_rank(sigma: np.ndarray) -> bool:
  return int(np.linalg.matrix_rank(sigma, hermitian=True)) == sigma.shape[0]


def frechet_from_statistics(mu_a, sigma_a, mu_b, sigma_b) -> float:
  """The Fréchet distance of N(mu_a, sigma_a) and N(mu_b, sigma_b) (rules: module docstring)."""
  mu_a, sigma_a = _statistics("set a", mu_a, sigma_a)
  mu_b, sigma_b = _statistics("set b", mu_b, sigma_b)
  if mu_a.shape != mu_b.shape:
    raise InputError(f"feature sizes differ: {mu_a.shape[0]} and {mu_b.shape[0]}")
  diff = mu_a - mu_b
  root = None
  if _full_rank(sigma_a) and _full_rank(sigma_b):
    root = scipy.linalg.sqrtm(sigma_a @ sigma_b)
  if root is None or not np.all(np.isfinite(root)):
    offset = EPS * np.eye(mu_a.shape[0])
    root = scipy.linalg.sqrtm((sigma_a + offset) @ (sigma_b + offset))
  if np.iscomplexobj(root):
    worst = float(np.max(np.abs(np.diagonal(root).imag)))
    if worst > IMAG_TOLERANCE:
      raise ValueError(f"sqrtm has an imaginary diagonal part of {worst:.3g} (> "
                       f"{IMAG_TOLERANCE:g}): the covariances are not usable")
    root = root.real
  value = float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * np.trace(root))
  if not np.isfinite(value):
    raise ValueError("the Fréchet distance is not finite")
  return max(value, 0.0)


def frechet_distance(features_a, features_b) -> float:
  """The Fréchet distance between feature sets (n, d) and (m, d), n, m >= 2; float64."""
  a = np.asarray(features_a)
  b = np.asarray(features_b)
  if a.ndim == 2 and b.ndim == 2 and a.shape[1] != b.shape[1]:
    raise InputError(f"feature sizes differ: {a.shape[1]} and {b.shape[1]}")
  return frechet_from_statistics(*feature_statistics(a), *feature_statistics(b))
