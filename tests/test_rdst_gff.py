"""Tests of the RDST global-feature-fusion variants 'rdst_gff' (conv) and 'rdst_mlp_gff' (mlp).

  .venv/bin/python -m pytest -q tests/test_rdst_gff.py

No reference layout or parity case exists for the author's `RDSTSR_N`: the expected parameter
counts and state-dict keys are derived here from the spec (§5.13) and the rdst reference layout
(tests/data/state_dicts/rdst*.json) plus the GFF modules; the forward is checked against a
re-assembly from the model's own sub-modules (tiny configuration, executed) and its shapes at the
real size with `jax.eval_shape`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medsr_jax import models
from medsr_jax.errors import InputError
from medsr_jax.layers import common
from medsr_jax.layers import dense
from medsr_jax.layers import upsample
from medsr_jax.torch_layouts import rdst as rdst_layout
from tests import parity_weights
from tests import zoo_checks

D, N = 60, 8  # embed_dim, RDSTBs
GFF_PARAMS = {'conv': (N * D * D + D) + (9 * D * D + D),  # conv1x1 480 -> 60, conv3x3 60 -> 60
              'mlp': (N * D * D + D) + (D * D + D)}       # Linear 480 -> 60, Linear 60 -> 60
NAMES = {'conv': 'rdst_gff', 'mlp': 'rdst_mlp_gff'}
RDST_LAYOUT = {4: 'rdst', 2: 'rdst_x2', 3: 'rdst_x3'}
TINY = dict(embed_dim=12, growth_rate=6, num_heads=2, window_size=4, num_blocks=2,
            dense_layers=2)


def _expected_state_dict_entries(mode, scale):
  """rdst's reference entries with RDSTSR_N's `bottleneck` inserted after `norm` (spec §5.13)."""
  ref = parity_weights.load_layout(RDST_LAYOUT[scale])['state_dict']
  if mode == 'conv':
    extra = [['bottleneck.0.weight', [D, N * D, 1, 1], 'param', 'float32'],
             ['bottleneck.0.bias', [D], 'param', 'float32'],
             ['bottleneck.1.weight', [D, D, 3, 3], 'param', 'float32'],
             ['bottleneck.1.bias', [D], 'param', 'float32']]
  else:
    extra = [['bottleneck.0.weight', [D, N * D], 'param', 'float32'],
             ['bottleneck.0.bias', [D], 'param', 'float32'],
             ['bottleneck.1.weight', [D, D], 'param', 'float32'],
             ['bottleneck.1.bias', [D], 'param', 'float32']]
  at = [r[0] for r in ref].index('norm.bias') + 1
  return ref[:at] + extra + ref[at:]


@pytest.mark.parametrize('mode', ['conv', 'mlp'])
@pytest.mark.parametrize('scale', [2, 3, 4])
def test_parameter_counts(mode, scale):
  rdst_trainable = parity_weights.load_layout(RDST_LAYOUT[scale])['trainable_params']
  v = models.abstract_variables(models.build(NAMES[mode], scale=scale))
  assert models.count_params(v) == rdst_trainable + GFF_PARAMS[mode]
  assert models.count_params(v['params']['bottleneck_0']) == N * D * D + D
  assert models.count_relative_position_params(v) == 64_800
  want = {('conv', 4): 4_526_281, ('mlp', 4): 4_497_481, ('conv', 2): 4_396_441,
          ('mlp', 2): 4_367_641, ('conv', 3): 4_558_741, ('mlp', 3): 4_529_941}
  assert models.count_params(v) == want[(mode, scale)]  # the figures in models/rdst.py


def test_table_5_5_figures_fit_the_mlp_gff():
  """Thesis Table 5.5: RDST and RDST+GFF both 4.40M params (modules the forward uses, no RPB)."""
  unused = 2 * D + 9 * D * D + D  # final LayerNorm and conv_after_body, skipped by RDSTSR_N
  for mode, millions in (('mlp', 4.40), ('conv', 4.43)):
    v = models.abstract_variables(models.build(NAMES[mode]))
    used = models.count_params(v) + 4 - models.count_relative_position_params(v) - unused
    assert round(used / 1e6, 2) == millions, mode


@pytest.mark.parametrize('mode', ['conv', 'mlp'])
@pytest.mark.parametrize('scale', [2, 3, 4])
def test_layout_keys_are_rdst_plus_bottleneck(mode, scale):
  want = _expected_state_dict_entries(mode, scale)
  model = models.build(NAMES[mode], scale=scale)
  ours = rdst_layout.entries(model)
  assert [e.key for e in ours] == [r[0] for r in want]
  for e, r in zip(ours, want):
    assert e.shape == tuple(r[1]), e.key
  trainable = sum(int(np.prod(e.shape)) for e in ours if e.kind == 'param')
  assert trainable == models.count_params(models.abstract_variables(model))


@pytest.mark.parametrize('mode,scale,scan', [('conv', 4, True), ('mlp', 2, True),
                                             ('mlp', 3, False)])
def test_round_trip_is_exact(mode, scale, scan):
  layout = {'name': NAMES[mode], 'state_dict': _expected_state_dict_entries(mode, scale)}
  sd = parity_weights.state_dict_v1(layout, seed=5)
  model = models.build(NAMES[mode], scale=scale, scan_blocks=scan)
  v = rdst_layout.from_torch(model, sd)
  want = jax.tree_util.tree_map(lambda s: s.shape, models.abstract_variables(model)['params'])
  assert jax.tree_util.tree_map(np.shape, v['params']) == want
  key = 'bottleneck.0.weight'
  got = v['params']['bottleneck_0']['kernel']
  np.testing.assert_array_equal(got, sd[key].T if mode == 'mlp' else sd[key].transpose(2, 3, 1, 0))
  back = rdst_layout.to_torch(model, v)
  assert list(back) == [r[0] for r in layout['state_dict']]
  for key, _, kind, dtype in layout['state_dict']:
    assert back[key].dtype == np.dtype(dtype), key
    if kind != 'buffer':
      np.testing.assert_array_equal(back[key], sd[key], err_msg=key)
  again = rdst_layout.from_torch(model, back)
  jax.tree_util.tree_map(np.testing.assert_array_equal, again, v)


@pytest.mark.parametrize('name', ['rdst_gff', 'rdst_mlp_gff'])
@pytest.mark.parametrize('scale', [2, 3, 4])
def test_output_shapes(name, scale):
  zoo_checks.check_output_shapes(models.build(name, scale=scale), [(40, 32), (45, 42)], batch=1)


def _reassembled_forward(model, params, x):
  """RDSTSR_N.forward from the model's sub-modules (loop layout): concat, GFF, + head, tail."""
  kw = dict(init_scheme=model.init_scheme)
  d = model.embed_dim
  x0 = common.conv3x3(d, **kw).apply({'params': params['head']}, x)
  t = common.layer_norm().apply({'params': params['patch_norm']}, x0)
  feats = []
  for i in range(model.num_blocks):
    t = dense.RDSTB(dim=d, growth=model.growth_rate, num_dense=model.dense_layers,
                    num_heads=model.num_heads, window_size=model.window_size,
                    **kw).apply({'params': params[f'body_{i}']}, t)
    feats.append(t)
  g = jnp.concatenate(feats, axis=-1)
  p0, p1 = params['bottleneck_0'], params['bottleneck_1']
  if model.gff == 'mlp':
    g = (g @ p0['kernel'] + p0['bias']) @ p1['kernel'] + p1['bias']
  else:
    g = common.Conv2d(d, 1, **kw).apply({'params': p0}, g)
    g = common.conv3x3(d, **kw).apply({'params': p1}, g)
  y = upsample.UpSampler(model.scale, d, **kw).apply({'params': params['upsample']}, g + x0)
  return common.conv3x3(model.in_channels, **kw).apply({'params': params['conv_last']}, y)


@pytest.mark.parametrize('mode', ['conv', 'mlp'])
def test_forward_matches_reassembly_and_skips_norm_and_conv_after_body(mode):
  scan = models.build('rdst', scale=2, gff=mode, **TINY)
  loop = models.build('rdst', scale=2, gff=mode, scan_blocks=False, **TINY)
  v_loop = zoo_checks.random_variables(loop, scale=0.3)
  v = rdst_layout.from_torch(scan, rdst_layout.to_torch(loop, v_loop))  # same weights, stacked
  x = jax.random.uniform(jax.random.PRNGKey(0), (1, 8, 12, 1))
  apply = jax.jit(scan.apply)
  y = apply(v, x)
  want = jax.jit(lambda p, x: _reassembled_forward(loop, p, x))(v_loop['params'], x)
  # The scanned program may round differently from the unrolled one (XLA picks its dot kernels
  # per program): float32 rounding of outputs in the hundreds, relative to their largest value.
  tol = dict(rtol=1e-5, atol=1e-6 * float(np.abs(want).max()))
  np.testing.assert_allclose(np.asarray(y), np.asarray(want), **tol)
  # Built but unused: other values for the final LayerNorm and conv_after_body change nothing.
  p = dict(v['params'], norm={'scale': np.full(12, 3.0, np.float32),
                              'bias': np.ones(12, np.float32)},
           conv_after_body=jax.tree_util.tree_map(np.zeros_like, v['params']['conv_after_body']))
  np.testing.assert_array_equal(np.asarray(apply({'params': p}, x)), np.asarray(y))
  if mode == 'mlp':  # the unscanned model (one mode is enough: the GFF code is shared)
    y_loop = jax.jit(loop.apply)(v_loop, x)
    np.testing.assert_allclose(np.asarray(y_loop), np.asarray(y), **tol)


def test_errors():
  for bad in (dict(gff='dense'), dict(gff_ratio=2.0)):
    with pytest.raises(InputError):
      models.build('rdst_gff', **bad)
  assert models.build('rdst', gff_ratio=2.0).gff == 'none'  # the ratio only matters with a GFF
  layout = {'name': 'rdst_mlp_gff', 'state_dict': _expected_state_dict_entries('mlp', 4)}
  sd = parity_weights.state_dict_v1(layout, seed=2)
  model = models.build('rdst_mlp_gff')
  bad = {k: v for k, v in sd.items() if k != 'bottleneck.1.bias'}
  with pytest.raises(InputError, match=r'bottleneck\.1\.bias'):
    rdst_layout.from_torch(model, bad)
  bad = dict(sd, **{'bottleneck.0.weight': np.zeros((D, 4 * D), np.float32)})
  with pytest.raises(InputError, match=r'bottleneck\.0\.weight'):
    rdst_layout.from_torch(model, bad)
  with pytest.raises(InputError, match='bottleneck'):  # an RDST state dict has no GFF
    rdst_layout.from_torch(model, parity_weights.state_dict_v1(
        parity_weights.load_layout('rdst'), seed=2))
  with pytest.raises(InputError, match=r'bottleneck\.0\.weight'):  # mlp weights, conv model
    rdst_layout.from_torch(models.build('rdst_gff'), sd)
