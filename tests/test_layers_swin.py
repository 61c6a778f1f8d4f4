"""Tests of medsr_jax.layers.{swin,common}: windows, indices, masks, attention, STL, init, MeanShift.

  .venv/bin/python -m pytest -q tests/test_layers_swin.py

The STL and the mask are checked against independent, loop-based numpy constructions that follow
the reference code's definitions (slices of the shifted map, per-window softmax attention).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medsr_jax.layers import common
from medsr_jax.layers import swin


def test_window_partition_order_and_round_trip():
  x = np.arange(2 * 16 * 24 * 3, dtype=np.float32).reshape(2, 16, 24, 3)
  win = np.asarray(swin.window_partition(jnp.asarray(x), 8))
  assert win.shape == (2 * 2 * 3, 8, 8, 3)
  n = 0
  for b in range(2):
    for i in range(2):
      for j in range(3):
        np.testing.assert_array_equal(win[n], x[b, 8 * i:8 * i + 8, 8 * j:8 * j + 8])
        n += 1
  back = swin.window_reverse(jnp.asarray(win), 8, 16, 24)
  np.testing.assert_array_equal(np.asarray(back), x)


def test_window_partition_rejects_bad_size():
  with pytest.raises(ValueError):
    swin.window_partition(jnp.zeros((1, 12, 16, 1)), 8)


def test_relative_position_index_matches_pairwise_definition():
  ws = 4
  idx = swin.relative_position_index(ws)
  assert idx.shape == (16, 16) and idx.dtype == np.int64
  for p in range(16):
    for q in range(16):
      dy, dx = p // ws - q // ws, p % ws - q % ws
      assert idx[p, q] == (dy + ws - 1) * (2 * ws - 1) + (dx + ws - 1)
  assert swin.relative_position_index(8).max() == 15 * 15 - 1


def _mask_by_slices(h, w, ws, s):
  """The reference's calculate_mask: label the 9 slice regions, compare labels within windows."""
  img = np.zeros((h, w))
  cnt = 0
  for hs in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
    for wsl in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
      img[hs, wsl] = cnt
      cnt += 1
  masks = []
  for i in range(h // ws):
    for j in range(w // ws):
      lab = img[i * ws:(i + 1) * ws, j * ws:(j + 1) * ws].reshape(-1)
      diff = lab[None, :] - lab[:, None]
      masks.append(np.where(diff != 0, -100.0, 0.0))
  return np.stack(masks).astype(np.float32)


@pytest.mark.parametrize('h,w,ws,s', [(24, 24, 8, 4), (40, 32, 8, 4), (8, 8, 8, 4),
                                      (16, 8, 4, 2), (12, 18, 6, 3)])
def test_shifted_window_mask_matches_slice_construction(h, w, ws, s):
  mask = swin.shifted_window_mask(h, w, ws, s)
  want = _mask_by_slices(h, w, ws, s)
  assert mask.shape == ((h // ws) * (w // ws), ws * ws, ws * ws)
  np.testing.assert_array_equal(mask, want)
  assert set(np.unique(mask)) <= {0.0, -100.0}
  assert swin.shifted_window_mask(h, w, ws, 0) is None


def test_shifted_window_mask_known_values():
  mask = swin.shifted_window_mask(24, 24, 8, 4)
  assert not mask[0].any()  # top-left window lies in region 0 only
  last = mask[-1]  # bottom-right window mixes 4 regions
  assert last[0, 0] == 0 and last[0, 4] == -100 and last[0, 32] == -100 and last[0, 36] == -100
  assert (last == -100).sum() == 64 * 64 - 4 * 16 * 16


def _ln(x, scale, bias):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + 1e-5) * scale + bias


def _gelu(x):
  return 0.5 * x * (1 + np.vectorize(math.erf)(x / np.sqrt(2)))


def _stl_numpy(x, p, heads, ws, s, mask):
  """Loop-based STL following the reference forward, float64."""
  b, h, w, c = x.shape
  hd = c // heads
  a = p['attn']
  y = _ln(x, p['norm1']['scale'], p['norm1']['bias'])
  y = np.roll(y, (-s, -s), axis=(1, 2))
  out = np.zeros_like(y)
  table = a['relative_position_bias_table']
  idx = swin.relative_position_index(ws)
  nwin = 0
  for bi in range(b):
    nwin = 0
    for i in range(h // ws):
      for j in range(w // ws):
        t = y[bi, i * ws:(i + 1) * ws, j * ws:(j + 1) * ws].reshape(-1, c)
        qkv = t @ a['qkv']['kernel'] + a['qkv']['bias']
        res = np.zeros((ws * ws, c))
        for hh in range(heads):
          q = qkv[:, hh * hd:(hh + 1) * hd] * hd ** -0.5
          k = qkv[:, c + hh * hd:c + (hh + 1) * hd]
          v = qkv[:, 2 * c + hh * hd:2 * c + (hh + 1) * hd]
          logits = q @ k.T + table[idx, hh]
          if mask is not None:
            logits = logits + mask[nwin]
          e = np.exp(logits - logits.max(-1, keepdims=True))
          res[:, hh * hd:(hh + 1) * hd] = (e / e.sum(-1, keepdims=True)) @ v
        res = res @ a['proj']['kernel'] + a['proj']['bias']
        out[bi, i * ws:(i + 1) * ws, j * ws:(j + 1) * ws] = res.reshape(ws, ws, c)
        nwin += 1
  x = x + np.roll(out, (s, s), axis=(1, 2))
  m = p['mlp']
  z = _ln(x, p['norm2']['scale'], p['norm2']['bias'])
  z = _gelu(z @ m['fc1']['kernel'] + m['fc1']['bias']) @ m['fc2']['kernel'] + m['fc2']['bias']
  return x + z


@pytest.mark.parametrize('shift', [0, 2])
def test_stl_matches_loop_reference(shift):
  c, heads, ws, h, w = 12, 3, 4, 8, 12
  layer = swin.SwinTransformerLayer(c, heads, ws, shift, mlp_ratio=2.0)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, h, w, c))
  shapes = jax.eval_shape(layer.init, jax.random.PRNGKey(1), x)['params']
  rng = np.random.default_rng(shift)  # random everything, LayerNorms and bias table included
  params = jax.tree_util.tree_map(
      lambda a: (0.3 * rng.standard_normal(a.shape)).astype(np.float32), shapes)
  y = np.asarray(jax.jit(layer.apply)({'params': params}, x), np.float64)
  p64 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
  want = _stl_numpy(np.asarray(x, np.float64), p64, heads, ws, shift,
                    swin.shifted_window_mask(h, w, ws, shift))
  np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)


def test_init_schemes():
  x = jnp.ones((1, 4, 4, 40))
  lin = common.Linear(50, init_scheme='reference')
  p = lin.init(jax.random.PRNGKey(0), x)['params']
  assert not np.asarray(p['bias']).any()
  assert abs(float(jnp.std(p['kernel'])) - 0.02) < 0.003
  p = common.Linear(50).init(jax.random.PRNGKey(0), x)['params']
  bound = 1 / math.sqrt(40)
  for leaf in (p['kernel'], p['bias']):
    assert float(jnp.max(jnp.abs(leaf))) <= bound and float(jnp.max(jnp.abs(leaf))) > 0.8 * bound
  p = common.conv3x3(7, init_scheme='reference').init(jax.random.PRNGKey(0), x)['params']
  assert p['kernel'].shape == (3, 3, 40, 7)
  assert float(jnp.max(jnp.abs(p['bias']))) <= 1 / math.sqrt(360)
  table = swin.WindowAttention(12, 3, 4).init(
      jax.random.PRNGKey(0), jnp.ones((1, 16, 12)))['params']['relative_position_bias_table']
  assert table.shape == (49, 3) and abs(float(jnp.std(table)) - 0.02) < 0.006
  with pytest.raises(ValueError):
    common.Linear(3, init_scheme='bogus').init(jax.random.PRNGKey(0), x)


def test_conv2d_matches_direct_sum():
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 5, 6, 2))
  conv = common.Conv2d(3, 3)
  p = conv.init(jax.random.PRNGKey(1), x)['params']
  y = np.asarray(conv.apply({'params': p}, x))
  xp = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
  k, b = np.asarray(p['kernel']), np.asarray(p['bias'])
  want = np.zeros((1, 5, 6, 3))
  for i in range(5):
    for j in range(6):
      want[0, i, j] = np.einsum('hwc,hwco->o', xp[0, i:i + 3, j:j + 3], k) + b
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def test_mean_shift_constants_and_inverse():
  ms = common.MeanShift(2, mean=(0.25, 0.5), std=(1.1, 2.0))
  x = jax.random.uniform(jax.random.PRNGKey(0), (1, 3, 3, 2))
  v = ms.init(jax.random.PRNGKey(0), x)
  assert 'params' not in v
  np.testing.assert_allclose(v['constants']['mean'], [0.25, 0.5])
  y = ms.apply(v, x, 'sub')
  np.testing.assert_allclose(y, (x - jnp.array([0.25, 0.5])) / jnp.array([1.1, 2.0]), rtol=1e-6)
  np.testing.assert_allclose(ms.apply({}, y, 'add'), x, rtol=1e-6, atol=1e-6)
  other = {'constants': {'mean': jnp.array([1.0, 1.0]), 'std': jnp.array([1.0, 1.0])}}
  np.testing.assert_allclose(ms.apply(other, x, 'sub'), x - 1.0, rtol=1e-6)
  with pytest.raises(ValueError):
    common.MeanShift(2, mean=(0.1,)).init(jax.random.PRNGKey(0), x)


def test_heads_linears_equal_linear_then_split_or_merge():
  """HeadsLinear / MergeHeadsLinear (the attention's qkv and proj) have Linear's params and give
  the values and gradients of the Linear followed by the PyTorch reshape / transpose."""
  bw, n, c, h = 3, 5, 12, 4
  x = jax.random.normal(jax.random.PRNGKey(0), (bw, n, c))
  split = swin.HeadsLinear(3, h, init_scheme='reference')
  params = split.init(jax.random.PRNGKey(1), x)
  linear = common.Linear(3 * c, init_scheme='reference')
  assert jax.tree_util.tree_map(jnp.shape, params) == jax.tree_util.tree_map(
      jnp.shape, linear.init(jax.random.PRNGKey(1), x))
  params = jax.tree_util.tree_map(lambda p: p + 0.1, params)  # a non-zero bias
  plain = lambda p, x: linear.apply(p, x).reshape(bw, n, 3, h, c // h).transpose(2, 0, 3, 1, 4)
  stacked = lambda p, x: jnp.stack(split.apply(p, x))
  g = jax.random.normal(jax.random.PRNGKey(2), (3, bw, h, n, c // h))
  assert len(split.apply(params, x)) == 3
  for f in (stacked, plain):
    assert f(params, x).shape == g.shape
  np.testing.assert_allclose(stacked(params, x), plain(params, x), rtol=1e-5, atol=1e-6)
  grads = [jax.grad(lambda p, x: jnp.sum(f(p, x) * g), argnums=(0, 1))(params, x)
           for f in (stacked, plain)]
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
                         *grads)

  y = jax.random.normal(jax.random.PRNGKey(3), (bw, h, n, c // h))
  merge = swin.MergeHeadsLinear(7)
  params = merge.init(jax.random.PRNGKey(4), y)
  plain = lambda p, y: common.Linear(7).apply(p, y.transpose(0, 2, 1, 3).reshape(bw, n, c))
  np.testing.assert_allclose(merge.apply(params, y), plain(params, y), rtol=1e-5, atol=1e-6)
  grads = [jax.grad(lambda p, y: jnp.sum(jnp.sin(f(p, y))), argnums=(0, 1))(params, y)
           for f in (merge.apply, plain)]
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
                         *grads)


def test_softmax_and_gelu_match_jax_values_and_gradients():
  """common.softmax (own backward) and common.gelu (erf form) against jax.nn's, to float32
  rounding: values, gradients, second derivatives (reverse over reverse, as WGAN-GP needs);
  under bfloat16 the softmax's row sums (forward and backward) are float32."""
  x = 4.0 * jax.random.normal(jax.random.PRNGKey(0), (3, 2, 5, 7))
  g = jax.random.normal(jax.random.PRNGKey(1), x.shape)
  ref_softmax = lambda x: jax.nn.softmax(x, axis=-1)
  ref_gelu = lambda x: jax.nn.gelu(x, approximate=False)
  for ours, ref in ((common.softmax, ref_softmax), (common.gelu, ref_gelu)):
    np.testing.assert_allclose(ours(x), ref(x), rtol=1e-6, atol=1e-6)
    grad = lambda f: jax.grad(lambda x: jnp.sum(f(x) * g))
    np.testing.assert_allclose(grad(ours)(x), grad(ref)(x), rtol=1e-5, atol=1e-6)
    second = lambda f: jax.grad(lambda x: jnp.sum(jnp.cos(grad(f)(x))))(x)
    np.testing.assert_allclose(second(ours), second(ref), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(common.gelu(x), _gelu(np.asarray(x, np.float64)), atol=1e-6)
  bf16 = jax.make_jaxpr(jax.grad(lambda x: jnp.sum(common.softmax(x) * g.astype(x.dtype))))(
      x.astype(jnp.bfloat16))
  sums = [e for e in bf16.jaxpr.eqns if e.primitive.name == 'reduce_sum']
  assert sums and all(e.invars[0].aval.dtype == jnp.float32 for e in sums)
