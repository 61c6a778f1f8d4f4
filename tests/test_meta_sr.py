"""Tests of MIASSR / MetaRDN / Meta-* (models.meta_sr) and their PyTorch layout.

  .venv/bin/python -m pytest -q tests/test_meta_sr.py

Reference data: tests/data/state_dicts/{miassr,meta_rdn}.json and the parity cases miassr_s1.5
(45 x 36 input), miassr_s2.5, miassr_s4 and meta_rdn_s3.3 (reference/PARITY.md rule v1; the
model gets the float scale in its forward). Shapes use `jax.eval_shape`; only the parity cases
and a few tiny configurations execute.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import parity_weights
from tests import zoo_checks
from medsr_jax import models
from medsr_jax import torch_layouts
from medsr_jax.errors import InputError
from medsr_jax.export_torch import variables_from_torch
from medsr_jax.export_torch import variables_to_torch
from medsr_jax.models import meta_sr
from medsr_jax.torch_layouts import meta_sr as meta_layout

REF_TAIL = dict(reference_tail_scale=2.0)
DEAD_X2 = 148_289  # conv 64 -> 256 (3x3) + conv 64 -> 1 (3x3): the unused x2 EDSR / RDN tail
# Trainable counts at C = 1: (thesis default, reference_tail_scale=2.0). The reference totals
# (spec §6) are the latter plus the 4 frozen MeanShift numbers.
COUNTS = {'miassr': (1_516_609 - DEAD_X2, 1_516_609),
          'meta_rdn': (5_763_265 - DEAD_X2, 5_763_265),
          'meta_srresnet': (1_520_834 - DEAD_X2 - 128, 1_520_834)}  # + BN(64) in its tail
PARITY = [('miassr_s1.5', 'miassr'), ('miassr_s2.5', 'miassr'), ('miassr_s4', 'miassr'),
          ('meta_rdn_s3.3', 'meta_rdn')]
TINY = {  # small feature extractors for the tests that execute
    'miassr': {'n_resblocks': 1, 'n_feats': 8},
    'meta_srresnet': {'n_resblocks': 1, 'n_feats': 8},
    'meta_mdsr': {'n_resblocks': 1, 'n_feats': 8},
    'meta_rdn': {'num_blocks': 2, 'features': 8, 'growth_rate': 4, 'num_layers': 2},
}


@pytest.mark.parametrize('layout', ['miassr', 'meta_rdn'])
@pytest.mark.parametrize('overrides', [{}, REF_TAIL], ids=['thesis', 'reference_tail'])
def test_layout_keys(layout, overrides):
  ours = zoo_checks.check_layout_keys(layout, layout, scale=2.5, **overrides)
  tail = [e for e in ours if e.key.startswith('feature_extractor.tail')]
  assert [e.key for e in tail][::2] == ['feature_extractor.tail.0.0.weight',
                                        'feature_extractor.tail.1.weight']
  want = 'params' if overrides else meta_sr.UNUSED
  assert all(e.collection == want and e.path[0] == meta_sr.DEAD_TAIL for e in tail)
  trainable = sum(int(np.prod(e.shape)) for e in ours
                  if e.kind == 'param' and e.collection == 'params')
  assert trainable == COUNTS[layout][bool(overrides)]


@pytest.mark.parametrize('name', sorted(COUNTS))
def test_trainable_counts(name):
  if name in ('miassr', 'meta_rdn'):
    assert zoo_checks.check_trainable_count(name, name, scale=3.3, **REF_TAIL) == COUNTS[name][1]
  for i, overrides in enumerate([{}, REF_TAIL]):
    v = models.abstract_variables(models.build(name, scale=3.3, **overrides))
    assert models.count_params(v) == COUNTS[name][i], (name, overrides)
    assert models.count_params(v['constants']) == 2
  # The thesis configuration has no dead tail at all.
  assert meta_sr.DEAD_TAIL not in models.abstract_variables(models.build(name))['params']


def test_dead_tail_structure_and_init_kinds():
  leaves = models.build('meta_srresnet', **REF_TAIL).dead_tail_leaves()
  got = {(col, '/'.join(path)): (shape, kind) for col, path, shape, kind, _ in leaves}
  assert got == {
      ('params', 'upsample/conv_0/kernel'): ((3, 3, 64, 256), 'uniform'),
      ('params', 'upsample/conv_0/bias'): ((256,), 'uniform'),
      ('params', 'upsample/bn_0/scale'): ((64,), 'ones'),
      ('params', 'upsample/bn_0/bias'): ((64,), 'zeros'),
      ('params', 'tail/kernel'): ((3, 3, 64, 1), 'uniform'),
      ('params', 'tail/bias'): ((1,), 'uniform'),
      ('batch_stats', 'upsample/bn_0/mean'): ((64,), 'zeros'),
      ('batch_stats', 'upsample/bn_0/var'): ((64,), 'ones'),
  }
  x3 = models.build('miassr', reference_tail_scale=3.0).dead_tail_leaves()
  assert {'/'.join(p): s for _, p, s, _, _ in x3}['upsample/conv_0/kernel'] == (3, 3, 64, 576)


@pytest.mark.parametrize('name', sorted(meta_sr.META_MODELS))
@pytest.mark.parametrize('hw', [(24, 24), (45, 36)])
def test_output_shapes(name, hw):
  model = models.build(name, scale=2.5)
  v = models.abstract_variables(model)
  x = jax.ShapeDtypeStruct((2,) + hw + (1,), jnp.float32)
  for s in (1.5, 2.5, 2, 3, 4):
    y = jax.eval_shape(functools.partial(model.apply, scale=s), v, x)
    assert y.shape == (2, int(s * hw[0]), int(s * hw[1]), 1) and y.dtype == jnp.float32
  y = jax.eval_shape(model.apply, v, x)  # no scale: the nominal one
  assert y.shape == (2, int(2.5 * hw[0]), int(2.5 * hw[1]), 1)


def test_registry_and_example_inputs():
  assert set(meta_sr.META_MODELS) <= set(models.available())
  model = models.build('miassr', scale=3)
  assert model.scale == 3.0 and isinstance(model.scale, float)
  args, kwargs = models.example_inputs(model)
  assert args[0].shape == (1, 24, 24, 1) and kwargs == {'scale': 3.0}
  assert models.build('meta_edsr').feature_model().n_feats == 256
  assert models.build('meta_mdsr').feature_model().n_resblocks == 80
  small = models.build('meta_mdsr', feature_options={'n_resblocks': 8})
  assert small.feature_model().n_resblocks == 8
  for bad in (dict(feature_extractor='rdst'), dict(feature_options={'feature_maps_only': False}),
              dict(feature_options={'no_such_option': 1}), dict(reference_tail_scale=2.5),
              dict(kernel_size=2)):
    with pytest.raises(InputError):
      models.build('miassr', **bad)
  with pytest.raises(InputError):
    models.build('miassr', scale=0.5)
  assert set(torch_layouts.names()) >= set(meta_sr.META_MODELS)


@pytest.mark.parametrize('layout', ['miassr', 'meta_rdn'])
@pytest.mark.parametrize('overrides', [{}, REF_TAIL], ids=['thesis', 'reference_tail'])
def test_round_trip(layout, overrides):
  v = zoo_checks.check_round_trip(layout, layout, scale=1.7, **overrides)
  sd = parity_weights.state_dict_v1(parity_weights.load_layout(layout), seed=7)
  home = v['params'] if overrides else v[meta_sr.UNUSED]
  assert set(v) == ({'params', 'constants'} if overrides else {'params', 'constants', 'unused'})
  np.testing.assert_array_equal(home[meta_sr.DEAD_TAIL]['upsample']['conv_0']['kernel'],
                                sd['feature_extractor.tail.0.0.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(v['params']['meta_upsampler']['fc2']['kernel'],
                                sd['meta_upsampler.P2W.meta_block.2.weight'].T)
  np.testing.assert_allclose(v['constants']['mean_shift']['std'], [1.1], rtol=1e-7)


@pytest.mark.parametrize('name', ['meta_srresnet', 'meta_edsr', 'meta_srdensenet',
                                  'meta_esrgan', 'meta_mdsr'])
def test_generic_layouts_round_trip(name):
  """Models without a reference layout: export -> import is exact, in both configurations."""
  opts = {'feature_options': {'n_resblocks': 2}} if name == 'meta_edsr' else {}  # 41M params
  for ref_tail in (False, True):
    overrides = dict(opts, **(REF_TAIL if ref_tail else {}))
    model = models.build(name, scale=2.5, **overrides)
    shapes = models.abstract_variables(model)
    v = {k: zoo_checks.random_like(shapes[k], seed=1, scale=0.1, positive=())
         for k in shapes if k != 'constants'}
    v['constants'] = {'mean_shift': {'mean': np.full(1, 0.3, np.float32),
                                     'std': np.full(1, 2.0, np.float32)}}
    sd = variables_to_torch(name, v, scale=2.5, in_channels=1, **overrides)
    keys = meta_layout.entries(model)
    assert list(sd) == [e.key for e in keys if e.key in sd]
    assert sd['sub_mean.bias'][0] == np.float32(-0.15)
    assert any(k.startswith('feature_extractor.') and 'tail' in k for k in sd)
    back = variables_from_torch(name, sd, scale=2.5, in_channels=1, **overrides)
    if not ref_tail:  # no 'unused' given: the reference's dead tail is exported as zeros
      assert all(not np.any(a) for a in jax.tree_util.tree_leaves(back.pop(meta_sr.UNUSED)))
    jax.tree_util.tree_map(np.testing.assert_array_equal, back, v)


@pytest.mark.parametrize('case,name', PARITY)
def test_forward_parity(case, name):
  zoo_checks.check_parity(case, name, call=zoo_checks.scale_call)


def test_parity_reference_tail_configuration():
  zoo_checks.check_parity('miassr_s2.5', 'miassr', call=zoo_checks.scale_call, **REF_TAIL)


def _tiny(name, **overrides):
  return models.build(name, scale=2.5, feature_options=TINY[name], **overrides)


def test_dead_tail_never_touches_the_output():
  model = _tiny('miassr', **REF_TAIL)
  shapes = models.abstract_variables(model)
  v = {'params': zoo_checks.random_like(shapes['params'], seed=2, scale=0.3)}
  x = np.random.default_rng(3).random((1, 7, 6, 1)).astype(np.float32)
  apply = jax.jit(model.apply, static_argnums=2)
  y = apply(v, x, 2.3)
  assert y.shape == (1, 16, 13, 1)
  v2 = jax.tree_util.tree_map(lambda a: a, v)
  v2['params'][meta_sr.DEAD_TAIL] = jax.tree_util.tree_map(
      lambda a: a + 1.0, v['params'][meta_sr.DEAD_TAIL])
  np.testing.assert_array_equal(np.asarray(apply(v2, x, 2.3)), np.asarray(y))
  grads = jax.jit(jax.grad(lambda p: jnp.sum(model.apply({'params': p}, x, 2.3))))(v['params'])
  assert not any(np.any(g) for g in jax.tree_util.tree_leaves(grads[meta_sr.DEAD_TAIL]))
  # The thesis configuration computes the same output from the same live weights.
  thesis = _tiny('miassr')
  live = {k: p for k, p in v['params'].items() if k != meta_sr.DEAD_TAIL}
  y_thesis = jax.jit(thesis.apply, static_argnums=2)({'params': live}, x, 2.3)
  np.testing.assert_array_equal(np.asarray(y_thesis), np.asarray(y))


def test_meta_mdsr_uses_head_ceil_scale():
  model = _tiny('meta_mdsr')
  v = {'params': zoo_checks.random_like(models.abstract_variables(model)['params'], seed=4,
                                        scale=0.3)}
  x = np.random.default_rng(5).random((1, 5, 5, 1)).astype(np.float32)
  zeroed = jax.tree_util.tree_map(lambda a: a, v)
  fe = zeroed['params']['feature_extractor']
  fe['head_3'] = jax.tree_util.tree_map(np.zeros_like, fe['head_3'])
  run = lambda p, s: np.asarray(model.apply(p, x, s))
  assert not np.allclose(run(v, 2.5), run(zeroed, 2.5))    # ceil(2.5) = 3
  np.testing.assert_array_equal(run(v, 1.5), run(zeroed, 1.5))  # ceil(1.5) = 2
  with pytest.raises(InputError):
    run(v, 4.5)  # no head 5


def test_meta_srresnet_batch_norm_train_mode():
  model = _tiny('meta_srresnet')
  shapes = models.abstract_variables(model)
  assert set(shapes) == {'params', 'batch_stats', 'constants'}
  x = jax.ShapeDtypeStruct((4, 8, 8, 1), jnp.float32)
  y, updates = jax.eval_shape(functools.partial(model.apply, scale=1.5, train=True,
                                                mutable=['batch_stats']), shapes, x)
  assert y.shape == (4, 12, 12, 1)
  assert jax.tree_util.tree_structure(updates['batch_stats']) == jax.tree_util.tree_structure(
      shapes['batch_stats'])


def _sd(layout='miassr', seed=1):
  return parity_weights.state_dict_v1(parity_weights.load_layout(layout), seed)


def test_errors_name_the_key():
  sd = _sd()
  bad = dict(sd)
  del bad['feature_extractor.body.3.body.2.bias']
  with pytest.raises(InputError, match=r'feature_extractor\.body\.3\.body\.2\.bias'):
    variables_from_torch('miassr', bad, scale=2.0, in_channels=1)
  bad = dict(sd, **{'meta_upsampler.P2W.meta_block.0.weight': np.zeros((256, 4), np.float32)})
  with pytest.raises(InputError, match=r'meta_upsampler\.P2W\.meta_block\.0\.weight'):
    variables_from_torch('miassr', bad, scale=2.0, in_channels=1)
  bad = dict(sd, **{'feature_extractor.extra.weight': np.zeros(3, np.float32)})
  with pytest.raises(InputError, match=r'feature_extractor\.extra\.weight'):
    variables_from_torch('miassr', bad, scale=2.0, in_channels=1)
  bad = {k: v for k, v in sd.items() if '.tail.' not in k}
  with pytest.raises(InputError, match=r'feature_extractor\.tail\.0\.0\.weight'):
    variables_from_torch('miassr', bad, scale=2.0, in_channels=1, **REF_TAIL)
  with pytest.raises(InputError, match='unexpected key'):  # a MetaRDN state dict is no MIASSR
    variables_from_torch('miassr', _sd('meta_rdn'), scale=2.0, in_channels=1)
  model = models.build('miassr', **REF_TAIL)
  with pytest.raises(InputError, match='tail_scale'):
    meta_layout.from_torch(model, sd, tail_scale=None)


def test_tail_scale_detection_for_the_thesis_configuration():
  sd = _sd()
  no_tail = {k: v for k, v in sd.items() if '.tail.' not in k}
  v = variables_from_torch('miassr', no_tail, scale=2.0, in_channels=1)
  assert meta_sr.UNUSED not in v
  model = models.build('miassr')
  x3 = meta_layout.to_torch(model, v, tail_scale=3.0)
  assert x3['feature_extractor.tail.0.0.weight'].shape == (576, 64, 3, 3)
  back = meta_layout.from_torch(model, x3)  # detects the x3 tail
  assert back[meta_sr.UNUSED][meta_sr.DEAD_TAIL]['upsample']['conv_0']['kernel'].shape == (
      3, 3, 64, 576)
  again = meta_layout.to_torch(model, back)  # and exports it again
  assert list(again) == list(x3)
  assert meta_layout.to_torch(model, v, tail_scale=None).keys() == no_tail.keys()
