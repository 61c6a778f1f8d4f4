"""Tests of the segmentation U-Net (smp.Unet, ResNet-34 encoder; spec §5.16) and its layout.

  .venv/bin/python -m pytest -q tests/test_unet_seg.py

Parity: rule v1 of PARITY.md with gain 1.0, one 160 x 128 input, 4-class logits (NCHW in the
case file). Counts are checked against the reference and a closed form; shapes and the tapped
features use `jax.eval_shape`. Only the parity case and a tiny train-mode run execute.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medsr_jax import models
from medsr_jax.errors import InputError
from medsr_jax.export_torch import variables_from_torch
from tests import parity_weights
from tests import zoo_checks

TINY = dict(stem_features=8, stage_widths=(8, 8, 16, 16), blocks_per_stage=(1, 2, 1, 1),
            decoder_channels=(16, 8, 8, 8, 4))


def resnet_encoder_count(c, stem=64, widths=(64, 128, 256, 512), blocks=(3, 4, 6, 3)):
  """Closed form of torchvision's ResNet BasicBlock encoder without fc (BN = 2 per channel)."""
  total = 49 * c * stem + 2 * stem
  cin = stem
  for s, (w, n) in enumerate(zip(widths, blocks)):
    for b in range(n):
      total += 9 * cin * w + 2 * w + 9 * w * w + 2 * w
      if cin != w or (s > 0 and b == 0):
        total += cin * w + 2 * w
      cin = w
  return total


def decoder_count(enc=(64, 64, 128, 256, 512), dec=(256, 128, 64, 32, 16)):
  total, cin = 0, enc[-1]
  skips = list(enc[-2::-1]) + [0]
  for w, skip in zip(dec, skips):
    total += 9 * (cin + skip) * w + 2 * w + 9 * w * w + 2 * w
    cin = w
  return total


def _random_variables(model, seed=0):
  rng = np.random.default_rng(seed)

  def draw(path, s):
    name = path[-1].key
    if name == 'var':
      return (0.5 + rng.random(s.shape)).astype(np.float32)
    if name in ('mean', 'bias'):
      return (0.1 * rng.standard_normal(s.shape)).astype(np.float32)
    if name == 'scale':
      return (1 + 0.1 * rng.standard_normal(s.shape)).astype(np.float32)
    fan_in = int(np.prod(s.shape[:-1]))
    return (rng.standard_normal(s.shape) / np.sqrt(fan_in)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, models.abstract_variables(model))


def test_layout_count_and_round_trip():
  ours = zoo_checks.check_layout_keys('unet_seg', 'unet_seg')
  assert sum(int(np.prod(e.shape)) for e in ours if e.kind == 'param') == 24_430_532
  zoo_checks.check_trainable_count('unet_seg', 'unet_seg')
  v = zoo_checks.check_round_trip('unet_seg', 'unet_seg')
  assert v['params']['encoder']['layer3_0']['downsample_conv']['kernel'].shape == (1, 1, 128, 256)
  assert v['batch_stats']['decoder']['block_0']['bn1']['var'].shape == (256,)


def test_forward_parity():
  zoo_checks.check_parity('unet_seg', 'unet_seg')


def test_closed_form_counts():
  v = models.abstract_variables(models.build('unet_seg'))['params']
  assert models.count_params(v['encoder']) == resnet_encoder_count(1) == 21_278_400
  assert models.count_params(v['decoder']) == decoder_count() == 3_151_552
  assert models.count_params(v['segmentation_head']) == 9 * 16 * 4 + 4 == 580
  brats = models.build('unet_seg', in_channels=4)  # BraTS: 4 modalities in, 4 classes out
  assert models.count_params(models.abstract_variables(brats)) == (
      resnet_encoder_count(4) + decoder_count() + 580) == 24_430_532 + 3 * 64 * 49


@pytest.mark.parametrize('h,w,c', [(160, 128, 1), (96, 96, 1), (64, 224, 4)])
def test_output_shapes_and_tapped_features(h, w, c):
  model = models.build('unet_seg', in_channels=c)
  v = models.abstract_variables(model)
  x = jax.ShapeDtypeStruct((2, h, w, c), jnp.float32)
  out = jax.eval_shape(model.apply, v, x)
  assert set(out) == {'logits', 'decoder', 'e1', 'e2', 'e3', 'e4', 'e5'}
  assert out['logits'].shape == (2, h, w, 4) and out['decoder'].shape == (2, h, w, 16)
  for i, ch in enumerate((64, 64, 128, 256, 512)):
    s = 2 ** (i + 1)
    assert out[f'e{i + 1}'].shape == (2, h // s, w // s, ch)
  enc = jax.eval_shape(lambda v, x: model.apply(v, x, encoder_only=True), v, x)
  assert set(enc) == {'e1', 'e2', 'e3', 'e4', 'e5'}


def test_bad_inputs_and_keys():
  model = models.build('unet_seg')
  v = models.abstract_variables(model)
  for shape in ((1, 100, 96, 1), (1, 96, 48, 1), (1, 96, 96, 2)):
    with pytest.raises(InputError):
      jax.eval_shape(model.apply, v, jax.ShapeDtypeStruct(shape, jnp.float32))
  sd = parity_weights.state_dict_v1(parity_weights.load_layout('unet_seg'), seed=3)
  bad = dict(sd)
  del bad['encoder.layer4.0.downsample.1.running_mean']
  with pytest.raises(InputError, match=r'encoder\.layer4\.0\.downsample\.1\.running_mean'):
    variables_from_torch('unet_seg', bad, scale=4, in_channels=1)
  bad = dict(sd, **{'segmentation_head.0.weight': np.zeros((3, 16, 3, 3), np.float32)})
  with pytest.raises(InputError, match=r'segmentation_head\.0\.weight'):
    variables_from_torch('unet_seg', bad, scale=4, in_channels=1)
  bad = dict(sd, **{'encoder.fc.weight': np.zeros((1000, 512), np.float32)})
  with pytest.raises(InputError, match=r'encoder\.fc\.weight'):
    variables_from_torch('unet_seg', bad, scale=4, in_channels=1)
  with pytest.raises(InputError):
    models.build('unet_seg', decoder_channels=(256, 128, 64, 32))


def test_train_mode_batch_norm():
  model = models.build('unet_seg', **TINY)
  v = _random_variables(model)
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 32, 64, 1))

  @jax.jit
  def run(v, x):
    full = model.apply(v, x, train=True, mutable=['batch_stats'])
    enc = model.apply(v, x, train=True, encoder_only=True, mutable=['batch_stats'])
    return full, enc, model.apply(v, x)

  (out, new), (enc, new_enc), out_eval = run(v, x)
  assert out['logits'].shape == (2, 32, 64, 4)
  assert np.all(np.isfinite(np.asarray(out['logits'])))
  np.testing.assert_array_equal(np.asarray(enc['e1']), np.asarray(out['e1']))
  assert not np.allclose(np.asarray(out['logits']), np.asarray(out_eval['logits']))
  old = v['batch_stats']
  for stats in (new, new_enc):
    assert not np.allclose(stats['batch_stats']['encoder']['bn1']['mean'],
                           old['encoder']['bn1']['mean'])
  assert not np.allclose(new['batch_stats']['decoder']['block_4']['bn2']['var'],
                         old['decoder']['block_4']['bn2']['var'])
  # The encoder-only pass (the reference's 'encoder' loss modes) leaves decoder stats alone.
  jax.tree_util.tree_map(np.testing.assert_array_equal,
                         jax.device_get(new_enc['batch_stats'].get('decoder', old['decoder'])),
                         old['decoder'])
