"""Tests of the meta-upscale layer against a slow, direct per-pixel implementation of its formula.

  .venv/bin/python -m pytest -q tests/test_meta_upscale.py

The direct implementation below loops over HR pixels and computes, for each, the float32
coordinate i * float32(1/s), its floor and remainder, the MLP weights for [1/s, dh, dw] and the
dot product with the zero-padded 3 x 3 LR neighbourhood (index c*9 + ky*3 + kx, output channel
fastest), in float64 arithmetic after the float32 coordinates (spec §5.10).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medsr_jax.errors import InputError
from medsr_jax.layers import meta_upscale

TRAINING_SCALES = [round(1.1 + 0.1 * i, 1) for i in range(30)]


def _direct(feat, params, scale, out_channels, k=3):
  """Per-pixel Meta-SR upscale, written from the formula (slow, obviously correct)."""
  b, h, w, c = feat.shape
  oh, ow = int(scale * h), int(scale * w)
  p = k // 2
  padded = np.pad(feat.astype(np.float64), ((0, 0), (p, p), (p, p), (0, 0)))
  w1 = np.asarray(params['fc1']['kernel'], np.float64)
  b1 = np.asarray(params['fc1']['bias'], np.float64)
  w2 = np.asarray(params['fc2']['kernel'], np.float64)
  b2 = np.asarray(params['fc2']['bias'], np.float64)
  inv = np.float32(1.0 / scale)
  out = np.zeros((b, oh, ow, out_channels))
  for i in range(oh):
    ci = np.float32(i) * inv
    si, di = min(int(np.floor(ci)), h - 1), ci - np.floor(ci)
    for j in range(ow):
      cj = np.float32(j) * inv
      sj, dj = min(int(np.floor(cj)), w - 1), cj - np.floor(cj)
      v = np.array([inv, di, dj], np.float32).astype(np.float64)
      wt = np.maximum(v @ w1 + b1, 0.0) @ w2 + b2  # (c * k * k * out,)
      for o in range(out_channels):
        for ch in range(c):
          for ky in range(k):
            for kx in range(k):
              idx = (ch * k * k + ky * k + kx) * out_channels + o
              out[:, i, j, o] += padded[:, si + ky, sj + kx, ch] * wt[idx]
  return out


def _params(c, out_channels, k=3, hidden=256, seed=0):
  rng = np.random.default_rng(seed)
  n = k * k * c * out_channels
  return {'fc1': {'kernel': rng.standard_normal((3, hidden)).astype(np.float32),
                  'bias': (0.5 * rng.standard_normal(hidden)).astype(np.float32)},
          'fc2': {'kernel': (rng.standard_normal((hidden, n)) / 16).astype(np.float32),
                  'bias': (0.1 * rng.standard_normal(n)).astype(np.float32)}}


@pytest.mark.parametrize('scale', [1.1, 1.5, 2.3, 2.5, 2.7, 3.7, 4.0])
@pytest.mark.parametrize('h,w', [(7, 7), (8, 5)])
def test_matches_direct_formula(scale, h, w):
  c, out_c = 2, 2
  x = np.random.default_rng(1).standard_normal((2, h, w, c)).astype(np.float32)
  params = _params(c, out_c)
  layer = meta_upscale.MetaUpscale(out_channels=out_c)
  with jax.default_matmul_precision('highest'):
    y = np.asarray(jax.jit(lambda p, x: layer.apply({'params': p}, x, scale))(params, x))
  assert y.shape == (2, int(scale * h), int(scale * w), out_c)
  ref = _direct(x, params, scale, out_c)
  np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize('scale', [2.3, 3.7])
def test_follows_formula_where_the_reference_period_detection_breaks(scale):
  """45 x 36 at 2.3 / 3.7: the repo's tiling scrambles weights there; we follow the formula."""
  x = np.random.default_rng(2).standard_normal((1, 45, 36, 1)).astype(np.float32)
  params = _params(1, 1, hidden=16, seed=3)
  layer = meta_upscale.MetaUpscale(out_channels=1, hidden=16)
  with jax.default_matmul_precision('highest'):
    y = np.asarray(jax.jit(lambda p, x: layer.apply({'params': p}, x, scale))(params, x))
  ref = _direct(x, params, scale, 1)
  np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_kernel_size_five_and_param_shapes():
  layer = meta_upscale.MetaUpscale(out_channels=1, kernel_size=5, hidden=8)
  x = np.random.default_rng(4).standard_normal((1, 6, 5, 3)).astype(np.float32)
  shapes = jax.eval_shape(lambda: layer.init(jax.random.key(0), x, 2.5))['params']
  assert shapes['fc1']['kernel'].shape == (3, 8) and shapes['fc2']['kernel'].shape == (8, 75)
  params = _params(3, 1, k=5, hidden=8, seed=5)
  with jax.default_matmul_precision('highest'):
    y = np.asarray(layer.apply({'params': params}, x, 2.5))
  ref = _direct(x, params, 2.5, 1, k=5)
  np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
  # The reference configuration: Pos2Weight(64 -> 1) has 149,056 parameters.
  ref_shapes = jax.eval_shape(lambda: meta_upscale.MetaUpscale().init(
      jax.random.key(0), jnp.zeros((1, 4, 4, 64)), 2.0))
  assert sum(a.size for a in jax.tree_util.tree_leaves(ref_shapes)) == 149_056


def test_source_grid_float32_arithmetic():
  rows, off = meta_upscale.source_grid(41, 2.3)
  assert rows.shape == (94,) and off.dtype == np.float32  # spec §4.3: s=2.3, LR 41 -> HR 94
  coord = np.arange(94, dtype=np.float32) * np.float32(1 / 2.3)
  np.testing.assert_array_equal(off, coord - np.floor(coord))
  np.testing.assert_array_equal(rows, np.floor(coord).astype(np.int32))
  rows, off = meta_upscale.source_grid(6, 4.0)
  np.testing.assert_array_equal(rows, np.repeat(np.arange(6), 4))
  np.testing.assert_array_equal(off, np.tile([0, 0.25, 0.5, 0.75], 6).astype(np.float32))
  assert meta_upscale.output_size(87, 1.1) == 95 and meta_upscale.output_size(10, 1.1) == 11


def test_source_cell_never_needs_the_clamp():
  """For every training scale and LR size <= 400 the float32 source cell stays inside."""
  for s in TRAINING_SCALES + [2.3, 2.7, 3.7]:
    for size in range(1, 401):
      coord = np.arange(int(s * size), dtype=np.float32) * np.float32(1.0 / s)
      assert coord.size == 0 or np.floor(coord).max() <= size - 1, (s, size)


def test_bad_scales():
  layer = meta_upscale.MetaUpscale()
  x = jnp.zeros((1, 4, 4, 2))
  params = _params(2, 1)
  for bad in (0.5, float('nan'), 'x', np.zeros(2), None, True):
    with pytest.raises(InputError):
      layer.apply({'params': params}, x, bad)
  with pytest.raises(InputError, match='static'):
    jax.jit(lambda s: layer.apply({'params': params}, x, s))(2.0)
  with pytest.raises(ValueError, match='odd'):
    meta_upscale.MetaUpscale(kernel_size=4).apply({'params': params}, x, 2.0)
