"""Tests of the RDST PyTorch layout: key lists, exact round trips, errors and forward parity.

  .venv/bin/python -m pytest -q tests/test_torch_layout_rdst.py

Parity (reference/PARITY.md rule v1): weights regenerated from tests/data/state_dicts/*.json by
tests/parity_weights.py, imported, run on the stored input (NCHW -> NHWC) and compared with the
stored output of the author's PyTorch RDSTSR; err must be < 1e-4.
"""

import jax
import numpy as np
import pytest

from tests import parity_weights
from tests import zoo_checks
from medsr_jax import models
from medsr_jax import torch_layouts
from medsr_jax.errors import InputError
from medsr_jax.export_torch import variables_from_torch
from medsr_jax.export_torch import variables_to_torch
from medsr_jax.torch_layouts import rdst as rdst_layout

LAYOUTS = [('rdst', 'rdst', 4), ('rdst_e', 'rdst_e', 4), ('rdst_x2', 'rdst', 2),
           ('rdst_x3', 'rdst', 3), ('rdst_e_x2', 'rdst_e', 2), ('rdst_e_x3', 'rdst_e', 3)]


def _rel_index(ws):
  """Independent relative-position index: pair (p, q) of a ws x ws window."""
  idx = np.zeros((ws * ws, ws * ws), np.int64)
  for p in range(ws * ws):
    for q in range(ws * ws):
      idx[p, q] = (p // ws - q // ws + ws - 1) * (2 * ws - 1) + (p % ws - q % ws + ws - 1)
  return idx


@pytest.mark.parametrize('layout,name,scale', LAYOUTS)
def test_layout_matches_reference_key_list(layout, name, scale):
  assert parity_weights.load_layout(layout)['scale'] == scale
  ours = zoo_checks.check_layout_keys(layout, name, scale)
  trainable = sum(int(np.prod(e.shape)) for e in ours if e.kind == 'param')
  assert trainable == parity_weights.load_layout(layout)['trainable_params']


@pytest.mark.parametrize('layout,name,scale', [LAYOUTS[0], LAYOUTS[3]])
@pytest.mark.parametrize('scan', [True, False])
def test_round_trip_is_exact(layout, name, scale, scan):
  ref = parity_weights.load_layout(layout)
  sd = parity_weights.state_dict_v1(ref, seed=7)
  v = variables_from_torch(name, sd, scale=scale, in_channels=1, scan_blocks=scan)
  np.testing.assert_allclose(v['constants']['mean_shift']['std'], [1.1], rtol=1e-7)
  np.testing.assert_allclose(v['constants']['mean_shift']['mean'], [0.25], rtol=1e-7)
  if scan:
    qkv = v['params']['body']['dense']['body_1']['blocks_0']['attn']['qkv']['kernel']
    assert qkv.shape == (8, 90, 270)
    np.testing.assert_array_equal(qkv[5], sd['body.5.body.1.body.blocks.0.attn.qkv.weight'].T)
  back = variables_to_torch(name, v, scale=scale, in_channels=1, scan_blocks=scan)
  assert list(back) == [r[0] for r in ref['state_dict']]  # all keys, buffers regenerated
  for key, shape, kind, dtype in (r[:4] for r in ref['state_dict']):
    assert back[key].shape == tuple(shape) and back[key].dtype == np.dtype(dtype), key
    if kind == 'buffer':
      continue
    np.testing.assert_array_equal(back[key], sd[key], err_msg=key)
  np.testing.assert_array_equal(back['body.3.body.2.body.blocks.1.attn.relative_position_index'],
                                _rel_index(8))
  mask = back['body.0.body.0.body.blocks.1.attn_mask']
  assert mask.shape == (9, 64, 64) and set(np.unique(mask)) == {0.0, -100.0}
  assert not mask[0].any() and mask[8].any()
  # A full state dict, buffers included, imports again to the same variables.
  again = variables_from_torch(name, back, scale=scale, in_channels=1, scan_blocks=scan)
  jax.tree_util.tree_map(np.testing.assert_array_equal, again, v)


def test_scan_and_loop_layouts_agree_through_torch():
  ref = parity_weights.load_layout('rdst_e')
  sd = parity_weights.state_dict_v1(ref, seed=3)
  scanned = variables_from_torch('rdst_e', sd, scale=4, in_channels=1)
  loop = variables_from_torch('rdst_e', sd, scale=4, in_channels=1, scan_blocks=False)
  a = scanned['params']['body']['conv']['kernel'][2]
  np.testing.assert_array_equal(a, loop['params']['body_2']['conv']['kernel'])


def _sd(layout='rdst_e', seed=1):
  return parity_weights.state_dict_v1(parity_weights.load_layout(layout), seed)


def test_errors_name_the_key():
  sd = _sd()
  bad = dict(sd)
  del bad['body.2.conv.bias']
  with pytest.raises(InputError, match=r'body\.2\.conv\.bias'):
    variables_from_torch('rdst_e', bad, scale=4, in_channels=1)
  bad = dict(sd, **{'body.9.conv.bias': np.zeros(60, np.float32)})
  with pytest.raises(InputError, match=r'body\.9\.conv\.bias'):
    variables_from_torch('rdst_e', bad, scale=4, in_channels=1)
  bad = dict(sd, **{'norm.weight': np.zeros(61, np.float32)})
  with pytest.raises(InputError, match=r'norm\.weight'):
    variables_from_torch('rdst_e', bad, scale=4, in_channels=1)
  key = 'body.0.body.0.body.blocks.0.attn.relative_position_index'
  bad = dict(sd, **{key: np.zeros((64, 64), np.int64)})
  with pytest.raises(InputError, match=key.replace('.', r'\.')):
    variables_from_torch('rdst_e', bad, scale=4, in_channels=1)
  key = 'body.1.body.0.body.blocks.1.attn_mask'
  bad = dict(sd, **{key: np.zeros((9, 64, 64), np.float32)})
  with pytest.raises(InputError, match=key.replace('.', r'\.')):
    variables_from_torch('rdst_e', bad, scale=4, in_channels=1)
  bad = dict(sd, **{'sub_mean.bias': np.array([0.3], np.float32)})
  with pytest.raises(InputError, match='sub_mean.bias'):
    variables_from_torch('rdst_e', bad, scale=4, in_channels=1)
  with pytest.raises(InputError, match='missing'):  # an x4 state dict is not an RDST x2
    variables_from_torch('rdst', sd, scale=4, in_channels=1)
  with pytest.raises(InputError):
    torch_layouts.get('no_such_model')


def test_attn_mask_of_another_construction_size_is_accepted():
  from medsr_jax.layers import swin
  sd = _sd()
  key = 'body.1.body.2.body.blocks.1.attn_mask'
  sd[key] = swin.shifted_window_mask(48, 48, 8, 4).copy()
  variables_from_torch('rdst_e', sd, scale=4, in_channels=1)


def test_three_channels_and_non_diagonal_mean_shift():
  model = models.build('rdst_e', scale=2, in_channels=3)
  v = {'params': zoo_checks.random_like(models.abstract_variables(model)['params'], scale=1.0),
       'constants': {'mean_shift': {'mean': np.array([0.4, 0.45, 0.5], np.float32),
                                    'std': np.array([1.0, 0.5, 0.25], np.float32)}}}
  sd = variables_to_torch('rdst_e', v, scale=2, in_channels=3)
  assert sd['sub_mean.weight'].shape == (3, 3, 1, 1)
  np.testing.assert_array_equal(sd['sub_mean.weight'][:, :, 0, 0], np.diag([1.0, 2.0, 4.0]))
  back = variables_from_torch('rdst_e', sd, scale=2, in_channels=3)
  jax.tree_util.tree_map(np.testing.assert_array_equal, back, v)
  sd['add_mean.weight'] = sd['add_mean.weight'].copy()
  sd['add_mean.weight'][0, 1] = 0.1
  with pytest.raises(InputError, match='add_mean.weight'):
    variables_from_torch('rdst_e', sd, scale=2, in_channels=3)


@pytest.mark.parametrize('case,name', [('rdst', 'rdst'), ('rdst_e', 'rdst_e'),
                                       ('rdst_x2', 'rdst')])
def test_forward_parity(case, name):
  zoo_checks.check_parity(case, name)
