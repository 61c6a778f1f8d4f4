"""Tests of the MS-GAN lesion detector LD (thesis §3.2.2, Fig. 3.2, §3.3.3): counts and shapes.

  .venv/bin/python -m pytest -q tests/test_lesion_detector.py

There is no reference code (TensorFlow, unpublished): the parameter count is checked against a
closed form of the architecture the thesis describes; shapes use `jax.eval_shape`. One tiny
configuration runs to check the resize head and train-mode BatchNorm.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medsr_jax import models
from medsr_jax.errors import InputError
from tests import zoo_checks

TINY = dict(input_size=32, widths=(4, 8), fc_features=(16, 8))


def ld_count(c=1, size=256, widths=(32, 64, 128, 128, 128), blocks=2, fc=(1024, 128), out=2):
  """Closed form: per level `blocks` BasicBlocks (two 3x3 convs without bias + BN each, a 1x1
  conv + BN projection where the width changes), then FC layers with biases."""
  total, cin = 0, c
  for w in widths:
    for _ in range(blocks):
      total += 9 * cin * w + 2 * w + 9 * w * w + 2 * w
      if cin != w:
        total += cin * w + 2 * w
      cin = w
  side = size // 2 ** len(widths)
  dims = [cin * side * side] + list(fc) + [out]
  return total + sum(a * b + b for a, b in zip(dims, dims[1:]))


def test_closed_form_count():
  v = models.abstract_variables(models.build('lesion_detector'))
  assert models.count_params(v) == ld_count() == 10_388_354
  # The five levels hold 20 3x3 convs (4 per level, thesis §3.3.3) plus 3 projections.
  convs = [k for k in jax.tree_util.tree_flatten_with_path(v['params'])[0]
           if k[0][-1].key == 'kernel' and len(k[1].shape) == 4]
  assert sum(1 for k in convs if k[1].shape[0] == 3) == 20
  assert sum(1 for k in convs if k[1].shape[0] == 1) == 3
  assert v['params']['fc1']['kernel'].shape == (128 * 8 * 8, 1024)
  assert v['params']['fc3']['kernel'].shape == (128, 2)
  for kw in (dict(in_channels=4), dict(input_size=128), dict(blocks_per_level=1)):
    model = models.build('lesion_detector', in_channels=kw.pop('in_channels', 1), **kw)
    want = ld_count(c=model.in_channels, size=model.input_size, blocks=model.blocks_per_level)
    assert models.count_params(models.abstract_variables(model)) == want


@pytest.mark.parametrize('h,w', [(60, 60), (120, 120), (240, 240), (256, 256), (90, 120)])
def test_any_input_size_gives_two_coordinates(h, w):
  model = models.build('lesion_detector', scale=4)
  v = models.abstract_variables(model)
  y = jax.eval_shape(model.apply, v, jax.ShapeDtypeStruct((3, h, w, 1), jnp.float32))
  assert y.shape == (3, 2) and y.dtype == jnp.float32


def test_config_and_input_errors():
  with pytest.raises(InputError):
    models.build('lesion_detector', input_size=240)  # not a multiple of 2^5
  with pytest.raises(InputError):
    models.build('lesion_detector', resize_method='area')
  model = models.build('lesion_detector')
  v = models.abstract_variables(model)
  with pytest.raises(InputError):
    jax.eval_shape(model.apply, v, jax.ShapeDtypeStruct((1, 64, 64, 2), jnp.float32))
  assert 'batch_stats' in v and set(models.default_options('lesion_detector')) >= {
      'widths', 'fc_features', 'input_size', 'resize_method'}


def test_tiny_model_resize_head_and_train_mode_batch_norm():
  model = models.build('lesion_detector', **TINY)
  v = zoo_checks.random_like(models.abstract_variables(model), scale=0.3, constant={'var': 1.0})
  x = jax.random.uniform(jax.random.PRNGKey(0), (4, 16, 16, 1))

  @jax.jit
  def run(v, x):
    big = jax.image.resize(x, (4, 32, 32, 1), 'linear', antialias=False)
    return (model.apply(v, x), model.apply(v, big),
            model.apply(v, x, train=True, mutable=['batch_stats']))

  y, y_big, (y_train, new) = run(v, x)
  assert y.shape == (4, 2) and np.all(np.isfinite(np.asarray(y)))
  # The head resizes 16 x 16 inputs to 32 x 32: the same as resizing them beforehand.
  np.testing.assert_allclose(np.asarray(y), np.asarray(y_big), rtol=1e-5, atol=1e-5)
  assert not np.allclose(np.asarray(y_train), np.asarray(y))
  for key, stats in new['batch_stats'].items():
    assert not np.allclose(np.asarray(stats['bn1']['mean']),
                           np.asarray(v['batch_stats'][key]['bn1']['mean'])), key
