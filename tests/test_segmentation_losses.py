"""Tests of the segmentation losses: smp's multiclass Dice loss and the U-Net perceptual losses.

  .venv/bin/python -m pytest -q tests/test_segmentation_losses.py

Thesis §5.2.2 (Eqs 5.10-5.12), reference spec §7.5. A tiny `unet_seg` with random variables
(random BatchNorm running statistics, so 'eval' and 'train' differ) on 32 x 32 and 40 x 36
images; every loss is checked against the model's own outputs, compared by hand.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medsr_jax import models
from medsr_jax.errors import InputError
from medsr_jax.losses import segmentation

TINY = dict(in_channels=1, num_classes=4, stem_features=4, stage_widths=(4, 8, 8, 8),
            blocks_per_stage=(1, 1, 1, 1), decoder_channels=(8, 8, 8, 8, 4))
ENCODER = ('e1', 'e2', 'e3', 'e4', 'e5')


@pytest.fixture(scope='module')
def unet():
  model = models.build('unet_seg', **TINY)
  variables = jax.tree_util.tree_map(jnp.asarray, models.random_variables(model, seed=3, scale=0.3))
  # A random U-Net predicts one class nearly everywhere; centring the head bias on each class's
  # median logit (on a sample image) makes every class appear, so 'hrl' sees several classes.
  head = variables['params']['segmentation_head']
  logits = model.apply(variables, images(32, 32, seed=9)[1])['logits'] - head['bias']
  bias = -jnp.median(logits.reshape(-1, logits.shape[-1]), axis=0)
  params = dict(variables['params'], segmentation_head=dict(head, bias=bias))
  return model, dict(variables, params=params)


def images(h, w, n=2, seed=0):
  rng = np.random.default_rng(seed)
  sr = rng.random((n, h, w, 1)).astype(np.float32)
  hr = np.clip(sr + 0.2 * rng.standard_normal(sr.shape), 0, 1).astype(np.float32)
  return jnp.asarray(sr), jnp.asarray(hr)


def l1(a, b):
  return float(np.mean(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def l2(a, b):
  return float(np.mean(np.square(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def direct_outputs(model, variables, x, train=False):
  """The U-Net's own outputs on `x`, edge-padded to 32-multiples and cropped back by hand."""
  h, w = x.shape[1:3]
  ph, pw = (-h) % 32, (-w) % 32
  padded = np.pad(np.asarray(x), ((0, 0), (0, ph), (0, pw), (0, 0)), mode='edge')
  if train:
    out, _ = model.apply(variables, jnp.asarray(padded), train=True, mutable=['batch_stats'])
  else:
    out = model.apply(variables, jnp.asarray(padded), train=False)
  crops = {}
  for name, y in out.items():
    if name in ENCODER:
      i = int(name[1])
      ch, cw = math.ceil(h / 2 ** i), math.ceil(w / 2 ** i)
    else:
      ch, cw = h, w
    crops[name] = np.asarray(y)[:, :ch, :cw]
  return crops


# ---------------------------------------------------------------------------------- dice_loss

# N = 1, 2 x 3 pixels, K = 3; probabilities chosen by hand, logits = their logs.
PROBS = np.array([[[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.1, 0.8, 0.1]],
                  [[0.2, 0.6, 0.2], [0.6, 0.1, 0.3], [0.4, 0.4, 0.2]]], np.float32)[None]
LABELS = np.array([[[0, 0, 1], [1, 0, 0]]])  # class 2 has no target pixel
# class 0: 2 * (0.7 + 0.5 + 0.6 + 0.4) / (sum p0 = 2.5 + |t0| = 4) -> loss 1 - 4.4 / 6.5
# class 1: 2 * (0.8 + 0.6) / (sum p1 = 2.4 + |t1| = 2)         -> loss 1 - 2.8 / 4.4
# class 2: absent from the target -> 0 (smp's mask), still counted in the mean
LOSS0, LOSS1, LOSS2 = 2.1 / 6.5, 1.6 / 4.4, 0.0


def test_dice_loss_hand_example():
  logits = jnp.log(jnp.asarray(PROBS))
  labels = jnp.asarray(LABELS)
  np.testing.assert_allclose(segmentation.dice_loss(logits, labels),
                             (LOSS0 + LOSS1 + LOSS2) / 3, rtol=1e-6)
  np.testing.assert_allclose(segmentation.dice_loss(logits, labels, classes=(1, 2)),
                             (LOSS1 + LOSS2) / 2, rtol=1e-6)
  np.testing.assert_allclose(segmentation.dice_loss(logits, labels, classes=[0, 1]),
                             (LOSS0 + LOSS1) / 2, rtol=1e-6)
  # Softmax is shift-invariant: the same logits plus a constant give the same loss.
  np.testing.assert_allclose(segmentation.dice_loss(logits + 3.0, labels),
                             (LOSS0 + LOSS1) / 3, rtol=1e-5)


def test_dice_loss_perfect_and_gradient():
  labels = jnp.asarray(LABELS)
  perfect = 50.0 * jax.nn.one_hot(labels, 3)
  assert float(segmentation.dice_loss(perfect, labels)) < 1e-6
  logits = jnp.log(jnp.asarray(PROBS))
  loss, grad = jax.jit(jax.value_and_grad(segmentation.dice_loss),
                       static_argnums=2)(logits, labels, (0, 1, 2))
  np.testing.assert_allclose(loss, (LOSS0 + LOSS1) / 3, rtol=1e-6)
  assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0
  # An all-but-empty class (probabilities underflow to 0, no targets) hits the eps clamp.
  extreme = jnp.asarray(LABELS)[..., None] * 0.0 + jnp.array([0.0, 0.0, -1e4])
  assert np.all(np.isfinite(jax.grad(segmentation.dice_loss)(extreme, labels)))


def test_dice_loss_bad_arguments():
  logits = jnp.zeros((1, 2, 3, 3))
  with pytest.raises(InputError):
    segmentation.dice_loss(logits, jnp.zeros((1, 2, 2), jnp.int32))
  with pytest.raises(ValueError, match='out of range'):
    segmentation.dice_loss(logits, jnp.zeros((1, 2, 3), jnp.int32), classes=(3,))
  with pytest.raises(ValueError):
    segmentation.dice_loss(logits, jnp.zeros((1, 2, 3), jnp.int32), classes=())


# -------------------------------------------------------------------------- unet_from_variables

def test_unet_from_variables():
  default = models.build('unet_seg')
  shapes = models.abstract_variables(default)
  assert segmentation.unet_from_variables(shapes) == default
  assert segmentation.unet_from_variables(shapes['params']) == default
  tiny = models.build('unet_seg', **dict(TINY, in_channels=4, num_classes=3,
                                         blocks_per_stage=(2, 1, 3, 1)))
  rebuilt = segmentation.unet_from_variables(models.abstract_variables(tiny))
  assert rebuilt == tiny
  assert rebuilt is segmentation.unet_from_variables(models.abstract_variables(tiny))
  with pytest.raises(InputError):
    segmentation.unet_from_variables({'params': {'encoder': {}}})


# ----------------------------------------------------------------------- unet_perceptual_loss

@pytest.mark.parametrize('hw', [(32, 32), (40, 36)])
def test_modes_equal_direct_feature_distances(unet, hw):
  model, variables = unet
  sr, hr = images(*hw)
  d_sr, d_hr = direct_outputs(model, variables, sr), direct_outputs(model, variables, hr)
  if hw == (32, 32):  # no padding: the plain forward
    plain = model.apply(variables, sr, train=False)
    for name, y in plain.items():
      np.testing.assert_allclose(d_sr[name], y, rtol=1e-6, atol=1e-6)
  else:
    assert d_sr['e5'].shape[1:3] == (2, 2) and d_sr['e1'].shape[1:3] == (20, 18)
  loss = lambda mode, **kw: float(segmentation.unet_perceptual_loss(variables, sr, hr, mode, **kw))
  terms = {}
  for name in ENCODER:
    terms[name] = l1(d_sr[name], d_hr[name])
    np.testing.assert_allclose(loss(name), terms[name], rtol=2e-5)
  np.testing.assert_allclose(loss('e_sum'), sum(terms.values()), rtol=2e-5)
  np.testing.assert_allclose(loss('d'), l1(d_sr['decoder'], d_hr['decoder']), rtol=2e-5)
  np.testing.assert_allclose(loss('d', criterion='mse'), l2(d_sr['decoder'], d_hr['decoder']),
                             rtol=2e-5)
  np.testing.assert_allclose(loss('e1', criterion='mse'), l2(d_sr['e1'], d_hr['e1']), rtol=2e-5)
  # layer_division: the author's loop, `loss += crit_l; loss /= len(layers)` inside it.
  looped = 0.0
  for name in ENCODER:
    looped = (looped + terms[name]) / 5
  np.testing.assert_allclose(loss('e_sum', layer_division=True), looped, rtol=2e-5)
  assert abs(loss('e_sum', layer_division=True) - loss('e_sum')) > 1e-3 * loss('e_sum')
  # hrl: Dice of the SR logits against the HR prediction's argmax.
  labels = jnp.argmax(jnp.asarray(d_hr['logits']), axis=-1)
  assert len(np.unique(np.asarray(labels))) >= 3
  logits = jnp.asarray(d_sr['logits'])
  hrl_all, hrl_lesion = loss('hrl'), loss('hrl', classes=(1, 2, 3))
  np.testing.assert_allclose(hrl_all, segmentation.dice_loss(logits, labels), rtol=1e-5)
  np.testing.assert_allclose(hrl_lesion, segmentation.dice_loss(logits, labels, (1, 2, 3)),
                             rtol=1e-5)
  assert hrl_all != hrl_lesion
  # The module rebuilt from the variables and the one given are the same network.
  np.testing.assert_allclose(loss('e2', model=model), terms['e2'], rtol=2e-5)


def test_criterion_and_batchnorm_switches(unet):
  model, variables = unet
  sr, hr = images(40, 36, n=3, seed=1)
  loss = lambda mode, **kw: float(segmentation.unet_perceptual_loss(variables, sr, hr, mode, **kw))
  assert loss('e1', criterion='mse') != loss('e1', criterion='l1')
  # bn='train': batch statistics of the SR batch and of the HR batch, two separate forwards.
  t_sr = direct_outputs(model, variables, sr, train=True)
  t_hr = direct_outputs(model, variables, hr, train=True)
  for mode, key in (('e1', 'e1'), ('e3', 'e3'), ('d', 'decoder')):
    train = loss(mode, bn='train', criterion='mse')
    np.testing.assert_allclose(train, l2(t_sr[key], t_hr[key]), rtol=2e-5)
    assert abs(train - loss(mode, bn='eval', criterion='mse')) > 1e-3 * train
  labels = jnp.argmax(jnp.asarray(t_hr['logits']), axis=-1)
  np.testing.assert_allclose(loss('hrl', bn='train'),
                             segmentation.dice_loss(jnp.asarray(t_sr['logits']), labels),
                             rtol=1e-5)
  # Identical images: every distance is 0 in both BN modes.
  for bn in ('eval', 'train'):
    same = segmentation.unet_perceptual_loss(variables, hr, hr, 'e_sum', bn=bn)
    assert float(same) == 0.0


def test_gradients_reach_sr_only(unet):
  model, variables = unet
  sr, hr = images(40, 36, seed=2)

  @jax.jit
  def grads(v, s):
    out = {}
    for mode, bn in (('e1', 'eval'), ('e_sum', 'eval'), ('d', 'train'), ('hrl', 'eval')):
      f = lambda v_, s_: segmentation.unet_perceptual_loss(v_, s_, hr, mode, 'mse', bn)
      out[mode] = jax.grad(f, argnums=(0, 1))(v, s)
    return out

  for mode, (g_vars, g_sr) in grads(variables, sr).items():
    g_sr = np.asarray(g_sr)
    assert np.all(np.isfinite(g_sr)) and np.abs(g_sr).max() > 0, mode
    leaves = jax.tree_util.tree_leaves(g_vars)
    assert leaves and all(not np.any(np.asarray(g)) for g in leaves), mode
  # The HR branch is under stop_gradient too.
  g_hr = jax.grad(lambda h: segmentation.unet_perceptual_loss(variables, sr, h, 'e1'))(hr)
  assert not np.any(np.asarray(g_hr))


def test_bad_arguments(unet):
  _, variables = unet
  sr, hr = images(32, 32)
  for kwargs, allowed in ((dict(mode='e6'), 'e_sum'), (dict(mode='e1', criterion='l2'), 'mse'),
                          (dict(mode='e1', bn='frozen'), 'train')):
    with pytest.raises(ValueError, match=allowed):
      segmentation.unet_perceptual_loss(variables, sr, hr, **kwargs)
  with pytest.raises(InputError):
    segmentation.unet_perceptual_loss(variables, sr, hr[:, :16], 'e1')
  with pytest.raises(InputError):
    segmentation.unet_perceptual_loss(variables, sr[0], hr[0], 'e1')
