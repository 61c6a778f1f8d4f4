"""Tests of the VGG-19 feature extractor, its torchvision converter and the VGG perceptual loss.

  .venv/bin/python -m pytest -q tests/test_vgg.py

Parity: tests/data/parity/vgg19.npz (rule v1 of reference/PARITY.md with gain 1.0, a 2 x 3 x 64
x 64 input fed without normalisation; `output` = conv5_4 and `aux/vgg22` = conv2_2, both before
their ReLU), imported through the converter from a .safetensors file. The loss is checked against
an independent NCHW computation of torchvision's `features[:8]` from the PyTorch tensors. The
rule-v1 weights (20M numbers) are drawn once per module; spatial sizes are tiny.
"""

import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medsr_jax import export
from medsr_jax import export_cli
from medsr_jax import models
from medsr_jax import torch_layouts
from medsr_jax.errors import InputError
from medsr_jax.losses import perceptual
from medsr_jax.models import vgg
from tests import parity_weights
from tests import zoo_checks

ROOT = pathlib.Path(__file__).resolve().parents[1]
CASE = 'vgg19'
TOTAL = 20_024_384
MEAN = np.array(vgg.IMAGENET_MEAN, np.float32)
STD = np.array(vgg.IMAGENET_STD, np.float32)
# torchvision vgg19 `features` (cfg 'E'): module types by index; 'C' conv, 'R' ReLU, 'M' pool.
TORCH_FEATURES = ''.join(('CR' * n) + 'M' for n in (2, 2, 4, 4, 4))


def _case():
  with np.load(parity_weights.DATA / 'parity' / f'{CASE}.npz') as z:
    return {k: z[k] for k in z.files}


@pytest.fixture(scope='module')
def case():
  return _case()


@pytest.fixture(scope='module')
def torch_sd(case):
  """The rule-v1 state dict of the parity case (gain 1.0 for vgg19, PARITY.md)."""
  layout = parity_weights.load_layout(str(case['layout']))
  return parity_weights.state_dict_v1(layout, int(case['seed']))


@pytest.fixture(scope='module')
def variables(torch_sd):
  return jax.tree_util.tree_map(
      jnp.asarray, export.variables_from_torch('vgg19', torch_sd, scale=1, in_channels=3))


def torch_features(sd, x_nchw, end, normalize):
  """torchvision `features[:end]` on an NCHW batch, straight from the PyTorch tensors."""
  x = jnp.asarray(x_nchw, jnp.float32)
  if normalize:
    x = (x - MEAN[:, None, None]) / STD[:, None, None]
  for i, kind in enumerate(TORCH_FEATURES[:end]):
    if kind == 'C':
      x = jax.lax.conv_general_dilated(
          x, jnp.asarray(sd[f'features.{i}.weight']), (1, 1), ((1, 1), (1, 1)),
          dimension_numbers=('NCHW', 'OIHW', 'NCHW'), precision='highest')
      x = x + jnp.asarray(sd[f'features.{i}.bias'])[:, None, None]
    elif kind == 'R':
      x = jax.nn.relu(x)
    else:
      x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), 'VALID')
  return x


def explicit_vgg22_loss(sd, sr, hr, normalize=True):
  """Per-channel F.mse_loss of features[:8] (C = 1 or any C: each channel repeated to RGB)."""
  losses = []
  for c in range(sr.shape[-1]):
    rgb = [np.repeat(np.transpose(a[..., c:c + 1], (0, 3, 1, 2)), 3, axis=1) for a in (sr, hr)]
    f_sr, f_hr = (torch_features(sd, a, 8, normalize) for a in rgb)
    losses.append(float(jnp.mean(jnp.square(f_sr - f_hr))))
  return np.array(losses)


# ----------------------------------------------------------------------------------------------
# Model and layout.


def test_layout_keys_counts_and_taps():
  zoo_checks.check_layout_keys(CASE, 'vgg19', 4.0)
  assert zoo_checks.check_trainable_count(CASE, 'vgg19', 4.0) == TOTAL
  # conv1_1 .. conv2_2 only: 3*64*9+64 + 64*64*9+64 + 64*128*9+128 + 128*128*9+128.
  small = models.build('vgg19', layers=('vgg22',))
  assert small.num_convs() == 4
  assert models.count_params(models.abstract_variables(small)) == 260_160
  assert len(torch_layouts.get('vgg19').entries(small)) == 8
  assert [n for n, _, _ in vgg.conv_names()][::4] == ['conv1_1', 'conv3_1', 'conv4_1', 'conv5_1']
  assert [i for _, i, _ in vgg.conv_names()][3::4] == [7, 16, 25, 34]
  shapes = jax.eval_shape(models.build('vgg19').apply, models.abstract_variables(
      models.build('vgg19')), jax.ShapeDtypeStruct((2, 48, 40, 3), jnp.float32))
  assert shapes['vgg22'].shape == (2, 24, 20, 128) and shapes['vgg54'].shape == (2, 3, 2, 512)


def test_options_and_errors(variables):
  with pytest.raises(InputError, match='unknown VGG layer'):
    models.build('vgg19', layers=('vgg33',))
  with pytest.raises(InputError, match='at least one layer'):
    models.build('vgg19', layers=())
  with pytest.raises(InputError, match='RGB'):
    jax.eval_shape(models.build('vgg19').apply, variables, jnp.zeros((1, 16, 16, 1)))
  # The registry ignores scale / in_channels: VGG always takes RGB.
  assert models.build('vgg19', scale=2, in_channels=1) == models.build('vgg19')
  x = np.random.default_rng(0).random((1, 8, 8, 3)).astype(np.float32)
  net = lambda **kw: jax.jit(models.build('vgg19', layers=('vgg22',), **kw).apply)
  pre = net(normalize=False)(variables, (x - MEAN) / STD)['vgg22']
  np.testing.assert_allclose(net()(variables, x)['vgg22'], pre, rtol=1e-5, atol=1e-5)
  post = net(normalize=False, after_relu=True)(variables, (x - MEAN) / STD)['vgg22']
  np.testing.assert_array_equal(post, jax.nn.relu(pre))
  assert float(jnp.min(pre)) < 0


# ----------------------------------------------------------------------------------------------
# Converter: parity, round trip, errors.


def test_parity_through_converter_and_round_trip(tmp_path, case, torch_sd):
  from safetensors.numpy import save_file
  whole = dict(torch_sd)
  # torchvision's file also has the classifier (tiny stand-ins: their shapes are never read).
  for i in (0, 3, 6):
    whole[f'classifier.{i}.weight'] = np.ones((2, 3), np.float32)
    whole[f'classifier.{i}.bias'] = np.ones((2,), np.float32)
  src = tmp_path / 'vgg19.safetensors'
  save_file(whole, str(src))
  lines = []
  config = export_cli.import_torch('vgg19', str(src), str(tmp_path / 'exp'), scale=1.0,
                                   in_channels=3, model_kwargs={}, log=lines.append)
  assert lines == ['left out 6 classifier.* tensors (not needed for VGG features)']
  assert config['param_count'] == TOTAL
  _, v, _ = export.load_export(tmp_path / 'exp')
  # The case feeds its input as it is: the ImageNet normalisation belongs to the loss.
  net = models.build('vgg19', normalize=False)
  with jax.default_matmul_precision('highest'):
    y = jax.jit(net.apply)(v, np.transpose(case['input'], (0, 2, 3, 1)))
  for tap, ref in (('vgg54', case['output']), ('vgg22', case['aux/vgg22'])):
    ours = np.transpose(np.asarray(y[tap]), (0, 3, 1, 2))
    assert ours.shape == ref.shape, tap
    err = parity_weights.parity_error(ours, ref)
    print(f'{CASE} {tap}: parity err {err:.3e}')
    assert err < 1e-4, (tap, err)
  back = export_cli.export_torch_file(str(tmp_path / 'exp'), str(tmp_path / 'back.npz'))
  assert list(back) == list(torch_sd)  # features only, in the reference order
  with np.load(tmp_path / 'back.npz', allow_pickle=False) as z:
    for k, want in torch_sd.items():
      np.testing.assert_array_equal(z[k], want, err_msg=k)


def test_features_only_npz_imports_without_a_note(tmp_path, torch_sd):
  small = {k: v for k, v in torch_sd.items() if int(k.split('.')[1]) <= 7}
  np.savez(tmp_path / 'f.npz', **small)
  # A 'vgg22'-only model has just these four convs.
  lines = []
  config = export_cli.import_torch('vgg19', str(tmp_path / 'f.npz'), str(tmp_path / 'exp'),
                                   scale=1.0, in_channels=3, log=lines.append,
                                   model_kwargs={'layers': ['vgg22']})
  assert lines == [] and config['param_count'] == 260_160


def test_missing_and_wrong_files_are_one_line_errors(tmp_path, torch_sd):
  r = subprocess.run([sys.executable, '-m', 'medsr_jax.export', '--model=vgg19',
                      f'--from_torch={tmp_path}/vgg19.pth', f'--out={tmp_path}/exp'],
                     cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert r.returncode == 2, r.stderr
  assert r.stderr.count('\n') == 1 and 'file not found' in r.stderr
  assert "pass torchvision's vgg19-dcbb9e9d.pth" in r.stderr
  assert not (tmp_path / 'exp').exists()

  def run(name, sd):
    np.savez(tmp_path / name, **sd)
    return export_cli.import_torch('vgg19', str(tmp_path / name), str(tmp_path / 'exp'),
                                   scale=1.0, in_channels=3, model_kwargs={}, log=print)
  hint = re.escape(torch_layouts.source_hint('vgg19'))
  with pytest.raises(InputError, match=r"no features\.\* tensors \(found 'conv1\.weight'\).*pass"):
    run('wrong.npz', {'conv1.weight': np.zeros((2, 3, 3, 3), np.float32)})
  with pytest.raises(InputError, match=rf"missing key .*'features\.34\.bias'.*{hint}"):
    run('partial.npz', {k: v for k, v in torch_sd.items() if k != 'features.34.bias'})
  bad = dict(torch_sd, **{'features.0.weight': np.zeros((64, 1, 3, 3), np.float32)})
  with pytest.raises(InputError, match=r"'features\.0\.weight' has shape \(64, 1, 3, 3\)"):
    run('grey.npz', bad)
  assert not (tmp_path / 'exp').exists()


def test_pth_files(tmp_path):
  try:
    import torch
  except ImportError:
    (tmp_path / 'w.pth').write_bytes(b'\x80\x04 pickle bytes that must never be unpickled')
    with pytest.raises(InputError, match="needs PyTorch.*vgg19-dcbb9e9d"):
      export_cli.import_torch('vgg19', str(tmp_path / 'w.pth'), str(tmp_path / 'exp'),
                              scale=1.0, in_channels=3, model_kwargs={})
    return
  sd = {f'features.{i}.{p}': torch.zeros(s) for i, p, s in
        ((0, 'weight', (64, 3, 3, 3)), (0, 'bias', (64,)), (2, 'weight', (64, 64, 3, 3)),
         (2, 'bias', (64,)), (5, 'weight', (128, 64, 3, 3)), (5, 'bias', (128,)),
         (7, 'weight', (128, 128, 3, 3)), (7, 'bias', (128,)))}
  sd['classifier.0.weight'] = torch.zeros(2, 3)
  torch.save(sd, tmp_path / 'w.pth')
  lines = []
  config = export_cli.import_torch('vgg19', str(tmp_path / 'w.pth'), str(tmp_path / 'exp'),
                                   scale=1.0, in_channels=3, log=lines.append,
                                   model_kwargs={'layers': ['vgg22']})
  assert len(lines) == 1 and config['param_count'] == 260_160


# ----------------------------------------------------------------------------------------------
# Perceptual loss.


@pytest.fixture(scope='module')
def images():
  rng = np.random.default_rng(3)
  return {c: (rng.random((2, 12, 12, c)).astype(np.float32),
              rng.random((2, 12, 12, c)).astype(np.float32)) for c in (1, 4)}


# One compiled function per configuration; the VGG weights are a traced argument as in training.
_LOSS = jax.jit(perceptual.vgg_loss,
                static_argnames=('layer', 'after_relu', 'channel_reduce', 'normalize'))


def test_loss_grey_equals_explicit(variables, torch_sd, images):
  sr, hr = images[1]
  got = float(_LOSS(variables, sr, hr))
  want = explicit_vgg22_loss(torch_sd, sr, hr)
  assert want.shape == (1,)
  np.testing.assert_allclose(got, want[0], rtol=2e-5)
  assert float(_LOSS(variables, sr, sr)) == 0.0
  # The same grey image given as RGB gives the same loss (C = 3 is used as is).
  rgb = [np.repeat(a, 3, axis=-1) for a in (sr, hr)]
  np.testing.assert_allclose(float(_LOSS(variables, *rgb)), got, rtol=1e-6)


def test_loss_multichannel_mean_and_sum(variables, torch_sd, images):
  sr, hr = images[4]
  mean = float(_LOSS(variables, sr, hr))
  total = float(_LOSS(variables, sr, hr, channel_reduce='sum'))
  per_channel = explicit_vgg22_loss(torch_sd, sr, hr)
  np.testing.assert_allclose(mean, per_channel.mean(), rtol=2e-5)
  np.testing.assert_allclose(total, 4 * mean, rtol=1e-6)
  assert float(_LOSS(variables, hr, hr, channel_reduce='sum')) == 0.0


def test_loss_gradient_reaches_sr_only(variables, images):
  sr, hr = images[1]
  grad = jax.jit(jax.grad(lambda v, s, h: perceptual.vgg_loss(v, s, h), argnums=(1, 2)))
  g_sr, g_hr = grad(variables, sr, hr)
  assert np.all(np.isfinite(g_sr)) and float(jnp.max(jnp.abs(g_sr))) > 0
  assert not np.any(np.asarray(g_hr))


def test_loss_vgg54_after_relu_and_no_normalisation(variables):
  # Rule-v1 weights (gain 1, biases) leave conv5_4 nearly input-independent, so differences
  # would be all cancellation: He-scaled kernels without biases keep the input's share.
  he = {'params': {name: {'kernel': p['kernel'] * np.sqrt(2.0), 'bias': 0 * p['bias']}
                   for name, p in variables['params'].items()}}
  rng = np.random.default_rng(4)
  sr, hr = (rng.random((1, 16, 16, 3)).astype(np.float32) for _ in range(2))
  got = float(_LOSS(he, sr, hr, layer='vgg54', after_relu=True, normalize=False))
  net = models.build('vgg19', layers=('vgg54',), after_relu=True, normalize=False)
  f = [jax.jit(net.apply)(he, a)['vgg54'] for a in (sr, hr)]
  assert f[0].shape == (1, 1, 1, 512) and float(jnp.min(f[0])) >= 0
  want = float(jnp.mean(jnp.square(f[0] - f[1])))
  assert want > 1e-4 * float(jnp.mean(jnp.square(f[0])))
  np.testing.assert_allclose(got, want, rtol=1e-4)


def test_loss_rejects_bad_arguments(variables, images):
  sr, hr = images[1]
  with pytest.raises(ValueError, match="unknown VGG layer 'vgg33'"):
    perceptual.vgg_loss(variables, sr, hr, layer='vgg33')
  with pytest.raises(ValueError, match="channel_reduce must be one of"):
    perceptual.vgg_loss(variables, sr, hr, channel_reduce='max')
  with pytest.raises(ValueError, match='one NHWC shape'):
    perceptual.vgg_loss(variables, sr, hr[:1])
  assert perceptual.vgg_module('vgg22', False, True) is perceptual.vgg_module('vgg22', False, True)
