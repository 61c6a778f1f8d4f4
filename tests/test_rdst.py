"""Tests of the RDST / RDST-E models, the pixel shuffle / up-sampler and the model registry.

  .venv/bin/python -m pytest -q tests/test_rdst.py

Real-size checks (parameter counts, output shapes) use `jax.eval_shape`, so nothing is compiled;
runs that execute use a tiny configuration.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medsr_jax import models
from medsr_jax.errors import InputError
from medsr_jax.layers import dense
from medsr_jax.layers import upsample
from tests import zoo_checks

TINY = dict(embed_dim=12, growth_rate=6, num_heads=2, window_size=4, num_blocks=2)

# Reference totals (param_counts.md) minus the 4 frozen MeanShift numbers of one channel.
COUNTS = {('rdst', 4): 4_464_961, ('rdst_e', 4): 2_379_241,
          ('rdst', 2): 4_335_121, ('rdst_e', 2): 2_249_401,
          ('rdst', 3): 4_497_421, ('rdst_e', 3): 2_411_701}


def _shapes(model, h, w, c=1):
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, h, w, c))))


@pytest.mark.parametrize('name,scale', sorted(COUNTS))
def test_trainable_parameter_counts(name, scale):
  v = _shapes(models.build(name, scale=scale), 8, 8)
  assert models.count_params(v) == COUNTS[(name, scale)]
  rpb = {'rdst': 64_800, 'rdst_e': 32_400}[name]
  assert models.count_relative_position_params(v) == rpb
  assert models.count_params(v['constants']) == 2  # mean and std, not trainable


def test_count_matches_closed_form_per_block():
  # Spec §5.13: one RDSTB = DSTLs 63,570 + 137,190 + 239,610 plus the LFF conv 81,060.
  v = _shapes(models.build('rdst', num_blocks=1, scan_blocks=False), 8, 8)
  assert models.count_params(v['params']['body_0']) == 63_570 + 137_190 + 239_610 + 81_060


@pytest.mark.parametrize('scale', [2, 3, 4])
@pytest.mark.parametrize('h,w', [(40, 32), (45, 42), (23, 17)])
def test_output_shapes_real_config(scale, h, w):
  zoo_checks.check_output_shapes(models.build('rdst_e', scale=scale), [(h, w)])


def test_tiny_model_runs_on_odd_sizes_and_three_channels():
  model = models.build('rdst', scale=3, in_channels=3, **TINY)
  x = jax.random.uniform(jax.random.PRNGKey(0), (1, 9, 6, 3))
  v = zoo_checks.random_variables(model)
  y = jax.jit(model.apply)(v, x)
  assert y.shape == (1, 27, 18, 3) and bool(jnp.all(jnp.isfinite(y)))
  # Edge padding only extends the border, so a crop of the padded result is not the same as a
  # model whose input had no padding to do: sanity-check against reflect padding differing.
  y_reflect = jax.jit(models.build('rdst', scale=3, in_channels=3, pad_mode='reflect',
                                     **TINY).apply)(v, x)
  assert y_reflect.shape == y.shape and not np.allclose(y_reflect, y)
  with pytest.raises(InputError):
    models.build('rdst', scale=3, in_channels=3, pad_mode='none', **TINY).apply(v, x)


def test_padding_no_op_and_mean_shift_identity_at_defaults():
  model = models.build('rdst', scale=2, **TINY)
  x = jax.random.uniform(jax.random.PRNGKey(0), (1, 8, 12, 1))
  v = zoo_checks.random_variables(model)
  y = jax.jit(model.apply)(v, x)  # no 'constants': mean 0 / std 1 from the attributes
  y_none = jax.jit(models.build('rdst', scale=2, pad_mode='none', **TINY).apply)(v, x)
  np.testing.assert_array_equal(np.asarray(y), np.asarray(y_none))

  assert set(_shapes(model, 8, 8)) == {'params', 'constants'}
  apply = jax.jit(model.apply)
  ident = {'params': v['params'],
           'constants': {'mean_shift': {'mean': np.zeros(1, np.float32), 'std': np.ones(1)}}}
  np.testing.assert_array_equal(np.asarray(apply(ident, x)), np.asarray(y))
  shifted = {'params': v['params'],
             'constants': {'mean_shift': {'mean': np.full(1, 0.5, np.float32),
                                          'std': np.full(1, 2.0)}}}
  y2 = apply(shifted, x)
  y3 = apply(ident, (x - 0.5) / 2.0) * 2.0 + 0.5
  np.testing.assert_allclose(np.asarray(y2), np.asarray(y3), rtol=1e-5, atol=1e-5)


def test_scan_traces_one_block_and_unrolls_short_stacks_on_cpu(monkeypatch):
  """nn.scan traces one RDSTB whatever the number of blocks. Kept as a loop (long stacks on CPU,
  every stack elsewhere) the program does not grow with the blocks; on CPU a stack of at most
  `cpu_compile.MAX_UNROLLED_BLOCKS` is unrolled (no while loop), and `init` never is."""
  from medsr_jax import cpu_compile
  x = jnp.zeros((1, 8, 8, 1))
  traces = []
  call = dense.ScannedRDSTB.__call__
  monkeypatch.setattr(dense.ScannedRDSTB, '__call__',
                      lambda self, *a, **k: (traces.append(1), call(self, *a, **k))[1])

  def lowered(blocks):
    model = models.build('rdst', scale=2, num_blocks=blocks, **{
        k: v for k, v in TINY.items() if k != 'num_blocks'})
    v = _shapes(model, 8, 8)
    traces.clear()
    text = jax.jit(model.apply).lower(v, x).as_text()
    apply_traces = len(traces)
    init_text = jax.jit(model.init).lower(jax.random.key(0), x).as_text()
    return apply_traces, text, init_text

  limit = cpu_compile.MAX_UNROLLED_BLOCKS
  (short_traces, short, short_init), (long_traces, long, long_init) = lowered(2), lowered(limit + 1)
  assert short_traces == long_traces <= 2  # flax traces a scan body at most twice
  assert 'stablehlo.while' not in short and 'stablehlo.while' in long
  assert 'stablehlo.while' in short_init and 'stablehlo.while' in long_init
  assert cpu_compile.scan_unroll(2, 'cpu') == 2 and cpu_compile.scan_unroll(limit + 1, 'cpu') == 1
  assert cpu_compile.scan_unroll(2, 'gpu') == 1
  assert cpu_compile.scan_unroll(2, 'cpu', initializing=True) == 1
  monkeypatch.setattr(cpu_compile, 'MAX_UNROLLED_BLOCKS', 0)  # every stack a loop, as on GPU
  (_, two, _), (_, seven, _) = lowered(2), lowered(limit + 1)
  assert len(seven) < 1.1 * len(two)


def test_pixel_shuffle_pytorch_channel_order():
  s, c = 2, 3
  x = np.arange(c * s * s, dtype=np.float32).reshape(1, 1, 1, c * s * s)
  y = np.asarray(upsample.pixel_shuffle(jnp.asarray(x), s))
  assert y.shape == (1, 2, 2, 3)
  # Hand-built: channel k = c*4 + i*2 + j lands at (i, j) of output channel c.
  want = np.array([[[0, 4, 8], [1, 5, 9]], [[2, 6, 10], [3, 7, 11]]], np.float32)
  np.testing.assert_array_equal(y[0], want)
  # General index rule on a bigger random tensor, and the inverse.
  z = np.random.default_rng(0).standard_normal((2, 3, 4, 2 * 9)).astype(np.float32)
  out = np.asarray(upsample.pixel_shuffle(jnp.asarray(z), 3))
  for (h, w, ch, i, j) in [(0, 0, 0, 0, 0), (2, 3, 1, 2, 1), (1, 2, 0, 1, 2)]:
    assert out[1, h * 3 + i, w * 3 + j, ch] == z[1, h, w, ch * 9 + i * 3 + j]
  np.testing.assert_array_equal(np.asarray(upsample.pixel_unshuffle(jnp.asarray(out), 3)), z)


def test_upsampler_layout_and_bad_scale():
  assert upsample.upsample_steps(4) == [2, 2] and upsample.upsample_steps(8) == [2, 2, 2]
  assert upsample.upsample_steps(3) == [3] and upsample.torch_indices(4) == [0, 2]
  up = upsample.UpSampler(3, 4)
  v = up.init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 2, 4)))
  assert v['params']['conv_0']['kernel'].shape == (3, 3, 4, 36)
  for bad in (5, 6, 1, 2.5):
    with pytest.raises(ValueError):
      upsample.upsample_steps(bad)


def test_dense_stack_concatenates_growth():
  import flax.linen as nn

  def factory(i, c_in, name):
    return nn.Dense(5 + 0 * i + 0 * c_in, name=name)

  stack = dense.DenseStack(factory, 3)
  x = jnp.ones((2, 7))
  v = stack.init(jax.random.PRNGKey(0), x)
  y = stack.apply(v, x)
  assert y.shape == (2, 7 + 15)
  np.testing.assert_array_equal(np.asarray(y[:, :7]), np.ones((2, 7)))
  assert v['params']['body_2']['kernel'].shape == (17, 5)


def test_registry():
  assert {'rdst', 'rdst_e'} <= set(models.available())
  assert models.build('rdst_e').num_blocks == 4 and models.build('rdst').num_blocks == 8
  assert models.build('rdst', scale=2.0).scale == 2
  with pytest.raises(ValueError, match='rdst_e'):
    models.build('no_such_model')
  with pytest.raises(InputError):
    models.build('rdst', blocks=3)
  with pytest.raises(InputError):
    models.build('rdst', scale=5)
  with pytest.raises(InputError):
    models.build('rdst', scale=2.5)
  with pytest.raises(InputError):
    models.build('rdst', embed_dim=64)  # not a multiple of 6 heads


def test_bad_input_shape():
  model = models.build('rdst', scale=2, **TINY)
  v = zoo_checks.random_variables(model)
  with pytest.raises(InputError):
    model.apply(v, jnp.zeros((1, 8, 8, 3)))
