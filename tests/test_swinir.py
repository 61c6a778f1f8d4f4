"""Tests of SwinIR ('swinir_light', 'swinir', 'swinir_psd'): layouts, counts, parity, options.

  .venv/bin/python -m pytest -q tests/test_swinir.py

Reference data: tests/data/state_dicts/swinir*.json and tests/data/parity/swinir*.npz (rule v1 of
reference/PARITY.md). Real-size models are only traced (`jax.eval_shape`) except in the four
parity cases; behaviour checks (shifts, padding, DropPath, mean) execute a tiny configuration.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medsr_jax import models
from medsr_jax.errors import InputError
from medsr_jax.export_torch import variables_from_torch
from medsr_jax.layers import swin
from medsr_jax.models import swinir
from medsr_jax.torch_layouts import swinir as swinir_layout
from tests import parity_weights
from tests import zoo_checks

LAYOUTS = [(f'{name}{suffix}', name, scale)
           for name in ('swinir_light', 'swinir', 'swinir_psd')
           for suffix, scale in (('', 4), ('_x2', 2), ('_x3', 3))]
TINY = dict(embed_dim=12, num_layers=2, depth=2, num_heads=2, window_size=4)


def _tiny(scale=2, **overrides):
  return models.build('swinir_light', scale=scale, **dict(TINY, **overrides))


@pytest.mark.parametrize('layout,name,scale', LAYOUTS)
def test_layout_keys_and_trainable_counts(layout, name, scale):
  ref = parity_weights.load_layout(layout)
  assert ref['scale'] == scale
  zoo_checks.check_layout_keys(layout, name, scale)
  zoo_checks.check_trainable_count(layout, name, scale)
  v = models.abstract_variables(models.build(name, scale=scale))
  assert set(v) == {'params'}  # SwinIR's mean is a constant, not a variable
  assert (models.count_relative_position_params(v)
          == ref['relative_position_bias_table_params'])


@pytest.mark.parametrize('layout,name,scale,scan', [
    ('swinir_light_x2', 'swinir_light', 2, True), ('swinir_light', 'swinir_light', 4, False),
    ('swinir', 'swinir', 4, True), ('swinir_x3', 'swinir', 3, True),
    ('swinir_psd_x3', 'swinir_psd', 3, True)])
def test_round_trip_is_exact(layout, name, scale, scan):
  zoo_checks.check_round_trip(layout, name, scale, scan_blocks=scan)


def test_scan_and_loop_import_the_same_weights():
  sd = parity_weights.state_dict_v1(parity_weights.load_layout('swinir_light_x2'), seed=3)
  scanned = variables_from_torch('swinir_light', sd, scale=2, in_channels=1)
  loop = variables_from_torch('swinir_light', sd, scale=2, in_channels=1, scan_blocks=False)
  qkv = scanned['params']['layers']['blocks_3']['attn']['qkv']['kernel']
  assert qkv.shape == (4, 60, 180)
  np.testing.assert_array_equal(qkv[2], loop['params']['layers_2']['blocks_3']['attn']['qkv']
                                ['kernel'])
  np.testing.assert_array_equal(qkv[2], sd['layers.2.residual_group.blocks.3.attn.qkv.weight'].T)


@pytest.mark.parametrize('case,name', [('swinir_light', 'swinir_light'),
                                       ('swinir_light_x2', 'swinir_light'),
                                       ('swinir_psd', 'swinir_psd'), ('swinir', 'swinir')])
def test_forward_parity(case, name):
  zoo_checks.check_parity(case, name)


@pytest.mark.parametrize('name', ['swinir_light', 'swinir', 'swinir_psd'])
@pytest.mark.parametrize('scale', [2, 3, 4])
def test_output_shapes(name, scale):
  model = models.build(name, scale=scale)
  zoo_checks.check_output_shapes(model, [(40, 32), (23, 17)])  # a window multiple and not


def test_no_shifted_windows_at_x4_with_the_reference_patch_size():
  """Spec §5.12: img_size = (24 // s // 8 + 1) * 8 = 8 at x4 <= window, so shift_size = 0."""
  for name in ('swinir_light', 'swinir', 'swinir_psd'):
    assert models.build(name, scale=4).construction_size() == 8
    assert models.build(name, scale=4).shift_size() == 0
    for scale in (2, 3):
      assert models.build(name, scale=scale).construction_size() == 16
      assert models.build(name, scale=scale).shift_size() == 4
  assert models.build('swinir_light', scale=4, shift_windows=True).shift_size() == 4
  assert models.build('swinir_light', scale=2, shift_windows=False).shift_size() == 0
  assert models.build('swinir_light', scale=4, torch_patch_size=64).shift_size() == 4
  keys = [e.key for e in swinir_layout.entries(models.build('swinir_light', scale=4))]
  assert not [k for k in keys if k.endswith('attn_mask')]
  # The shifted variant has the x4 masks for its construction size (one 8 x 8 window).
  shifted = swinir_layout.entries(models.build('swinir_light', scale=4, shift_windows=True))
  masks = [e for e in shifted if e.key.endswith('attn_mask')]
  assert len(masks) == 12 and masks[0].shape == (1, 64, 64)


def test_shifted_variant_differs_and_default_follows_the_reference_rule():
  x = jax.random.uniform(jax.random.PRNGKey(1), (1, 8, 12, 1))
  plain = _tiny(scale=4, torch_patch_size=8)  # construction size (8 // 4 // 4 + 1) * 4 = 4
  assert plain.shift_size() == 0
  v = zoo_checks.random_variables(plain, scale=0.3)
  y = jax.jit(plain.apply)(v, x)
  y_off = jax.jit(_tiny(scale=4, shift_windows=False).apply)(v, x)
  y_on = jax.jit(_tiny(scale=4, torch_patch_size=8, shift_windows=True).apply)(v, x)
  np.testing.assert_array_equal(np.asarray(y), np.asarray(y_off))
  assert y_on.shape == y.shape and not np.allclose(y_on, y, atol=1e-3)


def test_padding_reproduces_check_image_size():
  """Input padded (reflect, bottom/right) to a window multiple, output cropped after upsampling."""
  model = _tiny(scale=3)
  v = zoo_checks.random_variables(model, scale=0.3)
  x = np.asarray(jax.random.uniform(jax.random.PRNGKey(2), (1, 6, 9, 1)))
  y = jax.jit(model.apply)(v, x)
  assert y.shape == (1, 18, 27, 1)
  padded = np.pad(x, ((0, 0), (0, 2), (0, 3), (0, 0)), mode='reflect')
  y_full = jax.jit(_tiny(scale=3, pad_mode='none').apply)(v, padded)
  np.testing.assert_allclose(np.asarray(y), np.asarray(y_full)[:, :18, :27], atol=1e-6)
  with pytest.raises(InputError, match='multiple'):
    _tiny(scale=3, pad_mode='none').apply(v, x)
  with pytest.raises(InputError, match='reflect'):  # pad 2 >= size 2, as torch's reflect
    model.apply(v, x[:, :2])


def test_drop_path_only_in_training():
  model = _tiny(scale=2, drop_path_rate=0.5)
  v = zoo_checks.random_variables(model, scale=0.3)
  x = jax.random.uniform(jax.random.PRNGKey(3), (2, 8, 8, 1))
  run = jax.jit(lambda v, x, seed, train: model.apply(
      v, x, train=train, rngs={'dropout': jax.random.PRNGKey(seed)}), static_argnums=3)
  y_eval = run(v, x, 0, False)
  np.testing.assert_array_equal(np.asarray(y_eval), np.asarray(run(v, x, 1, False)))
  y_a, y_b = run(v, x, 0, True), run(v, x, 1, True)
  assert not np.allclose(y_a, y_eval) and not np.allclose(y_a, y_b)
  np.testing.assert_array_equal(np.asarray(y_a), np.asarray(run(v, x, 0, True)))
  rates = models.build('swinir_light').drop_path_rates()
  assert rates.shape == (4, 6) and rates[0, 0] == 0 and np.isclose(rates[-1, -1], 0.1)
  np.testing.assert_allclose(np.diff(rates.reshape(-1)), 0.1 / 23, rtol=1e-5)


def test_drop_path_keeps_the_expectation():
  x = jnp.ones((4000, 3))
  y = swin.drop_path(x, 0.25, jax.random.PRNGKey(0))
  assert set(np.unique(np.asarray(y)).tolist()) <= {0.0, float(np.float32(1) / np.float32(0.75))}
  assert abs(float(y.mean()) - 1.0) < 0.05


def test_rgb_mean_is_subtracted_and_added_back():
  model = _tiny(scale=2, in_channels=3)
  np.testing.assert_allclose(model.channel_mean(), swinir.RGB_MEAN)
  zero = _tiny(scale=2, in_channels=3, mean=(0.0, 0.0, 0.0))
  v = zoo_checks.random_variables(model, scale=0.3)
  x = jax.random.uniform(jax.random.PRNGKey(4), (1, 8, 8, 3))
  m = jnp.asarray(swinir.RGB_MEAN)
  y = jax.jit(model.apply)(v, x)
  y0 = jax.jit(zero.apply)(v, x - m) + m
  np.testing.assert_allclose(np.asarray(y), np.asarray(y0), atol=1e-5)
  assert _tiny(scale=2).channel_mean().tolist() == [0.0]


def test_errors():
  sd = parity_weights.state_dict_v1(parity_weights.load_layout('swinir_light_x2'), seed=1)
  key = 'layers.1.residual_group.blocks.4.mlp.fc2.bias'
  bad = {k: v for k, v in sd.items() if k != key}
  with pytest.raises(InputError, match=key.replace('.', r'\.')):
    variables_from_torch('swinir_light', bad, scale=2, in_channels=1)
  bad = dict(sd, **{'upsample.0.weight': np.zeros((16, 60, 3, 3), np.float32)})
  with pytest.raises(InputError, match=r'upsample\.0\.weight'):  # an x4 tail is not an x2 one
    variables_from_torch('swinir_light', bad, scale=2, in_channels=1)
  key = 'layers.0.residual_group.blocks.3.attn_mask'
  bad = dict(sd, **{key: np.zeros((4, 64, 64), np.float32)})
  with pytest.raises(InputError, match=key.replace('.', r'\.')):
    variables_from_torch('swinir_light', bad, scale=2, in_channels=1)
  ok = dict(sd, **{key: swin.shifted_window_mask(24, 24, 8, 4).copy()})  # other size: accepted
  variables_from_torch('swinir_light', ok, scale=2, in_channels=1)
  with pytest.raises(InputError, match='conv_before_upsample'):  # light weights, classical net
    variables_from_torch('swinir', sd, scale=2, in_channels=1, embed_dim=60, num_layers=4)
  for bad_options in (dict(upsampler='nearest+conv'), dict(embed_dim=64), dict(pad_mode='wrap'),
                      dict(drop_path_rate=1.0), dict(mean=(0.1, 0.2)), dict(depth=0)):
    with pytest.raises(InputError):
      models.build('swinir_light', **bad_options)
  with pytest.raises(InputError):
    models.build('swinir', scale=5)  # 'pixelshuffle' needs 2^k or 3
  assert models.build('swinir_psd', scale=5).scale == 5  # one-step shuffle takes any scale
  with pytest.raises(InputError):
    models.build('swinir_light', shift_size=4)  # not an option: use shift_windows
  model = _tiny()
  with pytest.raises(InputError, match='expects'):
    model.apply(zoo_checks.random_variables(model, scale=0.3), jnp.zeros((1, 8, 8, 3)))
