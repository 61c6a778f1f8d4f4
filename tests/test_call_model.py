"""Tests of `models.call_model` / `models.primary_output`: one adapter for every calling convention.

Tiny models only; most checks trace shapes with `jax.eval_shape` (nothing compiled), a few tiny
forwards execute (BatchNorm updates, `evaluate.Predictor`, `trainers.step.model_forward`).

  .venv/bin/python -m pytest -q tests/test_call_model.py
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medsr_jax import evaluate, models
from medsr_jax.models import registry
from medsr_jax.trainers import step as step_lib

RESNET_TINY = dict(n_feats=8, n_resblocks=1)
META_TINY = dict(feature_options={'n_resblocks': 1, 'n_feats': 8})
UNET_TINY = dict(stem_features=8, stage_widths=(8, 8, 16, 16), blocks_per_stage=(1, 1, 1, 1),
                 decoder_channels=(16, 8, 8, 8, 4))


def _x(h: int = 6, w: int = 5, n: int = 1, c: int = 1, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).random((n, h, w, c)).astype(np.float32)


def _shapes(model, variables, x, **kwargs):
  """(outputs, updates) of `call_model` as ShapeDtypeStructs (nothing is compiled)."""
  return jax.eval_shape(lambda v, x: models.call_model(model, v, x, **kwargs), variables, x)


def test_conventions_are_declared_at_registration():
  conv = models.convention_of
  assert conv(models.build('edsr_lite')) == models.CallConvention(takes_train=True)
  assert conv(models.build('miassr')).scale_arg == 'required'
  assert conv(models.build('mdsr')).scale_arg == 'optional'
  assert conv(models.build('ms_gan')).output == 'tuple'
  assert conv(models.build('ms_srresnet')).output == 'tuple'
  assert conv(models.build('unet_seg')).output == 'dict'
  assert conv(models.build('vgg19')) == models.CallConvention(output='dict')
  assert conv(models.build('srgan_d')).takes_train
  with pytest.raises(ValueError, match='output'):
    models.CallConvention(output='list')


def test_no_signature_inspection_per_call(monkeypatch):
  model = models.build('edsr_lite', scale=2, **RESNET_TINY)
  v = models.random_variables(model)

  def boom(*args, **kwargs):
    raise AssertionError('call_model derived a convention')

  # The zoo's conventions were recorded when its families registered: nothing derives them now.
  monkeypatch.setattr(registry, 'derive_convention', boom)
  y, _ = _shapes(model, v, _x(), train=True)
  assert y.shape == (1, 12, 10, 1)


def test_plain_model_and_mutable_only_when_present():
  model = models.build('edsr_lite', scale=2, **RESNET_TINY)
  v = models.random_variables(model)
  assert 'batch_stats' not in v
  y, updates = models.call_model(model, v, _x(), train=True, mutable=('batch_stats',))
  assert y.shape == (1, 12, 10, 1) and updates == {}
  assert models.primary_output(model, y) is y
  same, _ = models.call_model(model, v, _x(), scale=2)  # its own scale is accepted
  np.testing.assert_allclose(np.asarray(same), np.asarray(y), rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match='fixed x2'):
    models.call_model(model, v, _x(), scale=3)


def test_batchnorm_model_updates_batch_stats_in_train_mode():
  model = models.build('srresnet', scale=2, **RESNET_TINY)
  v = models.random_variables(model)
  assert 'batch_stats' in v
  x = _x(n=2)
  y, updates = models.call_model(model, v, x, train=True, mutable=('batch_stats',))
  assert y.shape == (2, 12, 10, 1) and set(updates) == {'batch_stats'}
  old, new = jax.tree.leaves(v['batch_stats']), jax.tree.leaves(updates['batch_stats'])
  assert len(old) == len(new) and any(not np.allclose(a, b) for a, b in zip(old, new))
  _, frozen = models.call_model(model, v, x, train=False)
  assert frozen == {}


def test_meta_model_takes_the_scale_and_refuses_to_guess():
  model = models.build('miassr', scale=4, **META_TINY)
  v = models.random_variables(model)
  y, updates = _shapes(model, v, _x(), scale=2.5)
  assert y.shape == (1, 15, 12, 1) and updates == {}
  with pytest.raises(ValueError, match='needs scale'):
    models.call_model(model, v, _x())


def test_mdsr_scale_is_optional():
  model = models.build('mdsr', scale=2, **RESNET_TINY)
  v = models.random_variables(model)
  assert _shapes(model, v, _x())[0].shape == (1, 12, 10, 1)
  assert _shapes(model, v, _x(), scale=3)[0].shape == (1, 18, 15, 1)


def test_ms_gan_tuple_primary_output_is_the_final_image():
  model = models.build('ms_gan', **dict(n_feats=8, n_resblocks=2))
  v = models.random_variables(model)
  outputs, updates = _shapes(model, v, _x(4, 4), train=True, mutable=('batch_stats',))
  assert [o.shape for o in outputs] == [(1, 8, 8, 1), (1, 16, 16, 1)]
  assert set(updates) == {'batch_stats'}
  assert models.primary_output(model, outputs) is outputs[-1]


def test_dict_output_has_no_primary_output():
  model = models.build('unet_seg', **UNET_TINY)
  v = models.random_variables(model)
  outputs, _ = _shapes(model, v, jnp.zeros((1, 32, 32, 1)))
  assert outputs['logits'].shape[:3] == (1, 32, 32)
  with pytest.raises(ValueError, match='dict'):
    models.primary_output(model, outputs)


def test_patchgan_takes_a_tuple_of_inputs():
  model = models.build('patchgan', in_channels=1)
  args, _ = models.example_inputs(model)
  logits, _ = _shapes(model, models.abstract_variables(model), tuple(args), train=True)
  assert logits.ndim == 4 and logits.shape[-1] == 1


def test_predictor_and_model_forward_use_the_convention():
  meta = models.build('miassr', scale=4, **META_TINY)
  v = models.random_variables(meta)
  lr = _x(n=3)
  assert evaluate.Predictor(meta, 2, scale=2.0)(v, lr).shape == (3, 12, 10, 1)
  assert evaluate.Predictor(meta, 2)(v, lr).shape == (3, 24, 20, 1)  # the nominal scale
  ms = models.build('ms_gan', n_feats=8, n_resblocks=1)
  mv = models.random_variables(ms)
  params, state = step_lib.split_variables(mv)
  y, new_state = jax.eval_shape(step_lib.model_forward(ms), params, state, _x(4, 4), None)
  assert y.shape == (1, 16, 16, 1) and set(new_state) == {'batch_stats'}
