"""Tests of ConvNet-lite / ConvNet-large (the author's ConvNeXt-block SR): layouts, parity, layers.

  .venv/bin/python -m pytest -q tests/test_convnet.py      (-s prints the parity errors)

Reference layouts (tests/data/state_dicts/convnet_{lite,large}{,_x2,_x3}.json): exact key lists,
shapes, kinds and trainable counts; exact round trips; forward parity (reference/PARITY.md rule
v1: err < 1e-4). Only the parity cases and two tiny models are compiled (~0.8 s each on the
2-core CPU); the file takes ~12 s without the compilation cache.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import parity_weights
from tests import zoo_checks
from medsr_jax import models
from medsr_jax.errors import InputError
from medsr_jax.export_torch import variables_from_torch
from medsr_jax.export_torch import variables_to_torch
from medsr_jax.layers import common
from medsr_jax.models import convnet

LAYOUTS = [('convnet_lite', 'convnet_lite', 4), ('convnet_lite_x2', 'convnet_lite', 2),
           ('convnet_lite_x3', 'convnet_lite', 3), ('convnet_large', 'convnet_large', 4),
           ('convnet_large_x2', 'convnet_large', 2), ('convnet_large_x3', 'convnet_large', 3)]
TINY = dict(features=8, num_blocks=3)


@pytest.mark.parametrize('layout,name,scale', LAYOUTS)
def test_layout_keys_and_trainable_counts(layout, name, scale):
  assert parity_weights.load_layout(layout)['scale'] == scale
  zoo_checks.check_layout_keys(layout, name, scale)
  zoo_checks.check_trainable_count(layout, name, scale)


def test_defaults():
  lite, large = models.build('convnet_lite'), models.build('convnet_large')
  assert (lite.features, lite.num_blocks) == (64, 16)
  assert (large.features, large.num_blocks) == (192, 32)
  assert not lite.mean_shift_in_forward


@pytest.mark.parametrize('layout,name,scale,scan', [('convnet_lite', 'convnet_lite', 4, True),
                                                    ('convnet_large_x3', 'convnet_large', 3,
                                                     False)])
def test_round_trip(layout, name, scale, scan):
  v = zoo_checks.check_round_trip(layout, name, scale, scan_blocks=scan)
  sd = parity_weights.state_dict_v1(parity_weights.load_layout(layout), seed=7)
  block = v['params']['body'] if scan else v['params']['body_5']
  dw = block['dwconv']['kernel'][5] if scan else block['dwconv']['kernel']
  f = dw.shape[-1]
  assert dw.shape == (7, 7, 1, f)  # PyTorch (C, 1, 7, 7), depthwise
  np.testing.assert_array_equal(dw[2, 6, 0, 3], sd['body.5.dwconv.weight'][3, 0, 2, 6])
  gamma = block['gamma'][5] if scan else block['gamma']
  np.testing.assert_array_equal(gamma, sd['body.5.gamma'])
  np.testing.assert_allclose(v['constants']['mean_shift']['mean'], [0.25], rtol=1e-7)


def test_errors_name_the_key():
  model = models.build('convnet_lite', scale=2, **TINY)
  sd = variables_to_torch('convnet_lite', zoo_checks.random_variables(model), scale=2,
                          in_channels=1, **TINY)
  bad = dict(sd)
  del bad['body.2.norm.bias']
  with pytest.raises(InputError, match=r'missing key.*body\.2\.norm\.bias'):
    variables_from_torch('convnet_lite', bad, scale=2, in_channels=1, **TINY)
  bad = dict(sd, **{'body.1.dwconv.weight': np.zeros((8, 8, 7, 7), np.float32)})
  with pytest.raises(InputError, match=r'body\.1\.dwconv\.weight.*\(8, 8, 7, 7\)'):
    variables_from_torch('convnet_lite', bad, scale=2, in_channels=1, **TINY)
  with pytest.raises(InputError, match=r'missing key.*tail\.0\.2\.weight'):  # x2 is not x4
    variables_from_torch('convnet_lite', sd, scale=4, in_channels=1, **TINY)
  with pytest.raises(InputError):
    models.build('convnet_large', scale=6)
  with pytest.raises(InputError):
    models.build('convnet_lite', kernel_size=6)
  with pytest.raises(InputError, match='ConvNetSR expects'):
    jax.eval_shape(model.apply, models.abstract_variables(model),
                   jax.ShapeDtypeStruct((1, 8, 8, 2), jnp.float32))


@pytest.mark.parametrize('name', ['convnet_lite', 'convnet_large'])
@pytest.mark.parametrize('scale', [2, 3, 4])
def test_output_shapes(name, scale):
  zoo_checks.check_output_shapes(models.build(name, scale=scale), [(21, 13)])


def test_depthwise_conv_init_and_numpy_model():
  """PyTorch init bound 1/sqrt(49) for kernel and bias; (7, 7, 1, C) grouped conv semantics."""
  c = 5
  mod = common.Conv2d(c, 7, groups=c)
  x = np.random.default_rng(0).standard_normal((2, 9, 8, c)).astype(np.float32)
  v = mod.init(jax.random.key(0), x)  # tiny: run eagerly
  k, b = np.asarray(v['params']['kernel']), np.asarray(v['params']['bias'])
  assert k.shape == (7, 7, 1, c) and b.shape == (c,)
  assert np.abs(k).max() <= 1 / 7 and np.abs(k).max() > 0.8 / 7 and np.abs(b).max() <= 1 / 7
  xp = np.pad(x.astype(np.float64), ((0, 0), (3, 3), (3, 3), (0, 0)))
  want = np.zeros(x.shape) + b
  for dy, dx in np.ndindex(7, 7):
    want += xp[:, dy:dy + 9, dx:dx + 8, :] * k[dy, dx, 0]
  np.testing.assert_allclose(np.asarray(mod.apply(v, x)), want, atol=1e-5)


def test_mean_shift_not_applied_by_default():
  model = models.build('convnet_lite', scale=2, **TINY)
  v = zoo_checks.random_variables(model, seed=1)
  shapes = models.abstract_variables(model)
  assert set(shapes) == {'params', 'constants'}
  consts = {'mean_shift': {'mean': np.full(1, 0.25, np.float32),
                           'std': np.full(1, 1.1, np.float32)}}
  x = np.random.default_rng(2).random((1, 6, 7, 1)).astype(np.float32)
  y_plain = jax.jit(model.apply)(v, x)
  y_const = jax.jit(model.apply)(dict(v, constants=consts), x)
  np.testing.assert_array_equal(np.asarray(y_plain), np.asarray(y_const))
  shifted = models.build('convnet_lite', scale=2, mean_shift_in_forward=True, **TINY)
  y_shift = jax.jit(shifted.apply)(dict(v, constants=consts), x)
  want = jax.jit(model.apply)(v, (x - 0.25) / 1.1) * 1.1 + 0.25
  np.testing.assert_allclose(np.asarray(y_shift), np.asarray(want), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('case', ['convnet_lite', 'convnet_large'])
def test_forward_parity(case):
  zoo_checks.check_parity(case, case)
