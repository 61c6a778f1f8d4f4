"""Tests for `python -m medsr_jax.infer`: round trips per format, slicing, and every bad input.

  .venv/bin/python -m pytest -q tests/test_infer.py

A tiny RDST (x2, random weights) is exported once per module. Error cases run `infer.run` under
`errors.cli_main` in-process (what `main` does); one success and one failure also run the real
command in a subprocess.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
from PIL import Image as PILImage
import pytest

from medsr_jax import errors, export, infer, models

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = dict(embed_dim=12, num_blocks=1, num_heads=2, growth_rate=6, window_size=4)
SCALE = 2
H, W = 10, 12  # in-plane size of every test input: (H, W) images, volume slices (Y, X) = (H, W)


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
  module = models.build('rdst', scale=SCALE, in_channels=1, **TINY)
  shapes = export.expected_shapes(module)
  rng = np.random.default_rng(0)
  flat = {k.split('/', 1)[1]: (0.05 * rng.standard_normal(v.shape)).astype(np.float32)
          for k, v in shapes.items() if k.startswith('params/')}
  d = tmp_path_factory.mktemp('model') / 'export'
  export.save_export(str(d), model_name='rdst', model_kwargs=TINY, scale=SCALE, in_channels=1,
                     params=export.unflatten_params(flat), extra={'step': 1})
  return d


def cli(capsys, **kw):
  """Runs infer like `main` does; returns (exit code, stderr)."""
  names = {'input': 'input_path', 'output': 'output_path'}
  kw = {names.get(k, k): str(v) if isinstance(v, pathlib.Path) else v for k, v in kw.items()}
  try:
    errors.cli_main(lambda: infer.run(**kw))
    code = 0
  except SystemExit as e:
    code = e.code
  return code, capsys.readouterr().err


def _listing(directory):
  return sorted(p.name for p in directory.iterdir())


def _nifti(path, vol, dtype=None):
  affine = np.array([[-0.9, 0., 0., 40.], [0., 1.1, 0., -20.], [0., 0., 2.5, 3.], [0., 0., 0., 1.]])
  img = nib.Nifti1Image(vol, affine)
  if dtype is not None:
    img.set_data_dtype(dtype)
  img.set_qform(affine, code=1)
  img.set_sform(affine, code=1)
  img.to_filename(str(path))
  return affine


def _check_range(out, lo, hi, tol):
  assert out.min() >= lo - tol and out.max() <= hi + tol
  assert out.max() - out.min() > 0.05 * (hi - lo)  # not collapsed to a constant


# ------------------------------------------------------------------------------------------------
# The slicing convention, with an exactly known "model" (nearest-neighbour x2).


def _nearest(record):
  def sr(slices):
    record.append(slices.copy())
    return np.kron(slices, np.ones((1, 2, 2), slices.dtype))
  return sr


def test_volume_slices_follow_the_thesis_loader():
  vol = np.random.default_rng(0).random((4, 3, 5)) * 100 + 7
  record = []
  out = infer.super_resolve(vol, _nearest(record), axis=2, transpose_2d=False)
  x = (vol - vol.min()) / (vol.max() - vol.min())
  for k in range(5):  # slice k is vol[:, :, k].T, min-max over the whole volume
    np.testing.assert_allclose(record[0][k], x[:, :, k].T, rtol=1e-6)
  want = np.kron(vol, np.ones((2, 2, 1)))
  np.testing.assert_allclose(out, want, rtol=1e-5)


@pytest.mark.parametrize('axis', [0, 1, -1])
def test_volume_axes(axis):
  vol = np.random.default_rng(1).random((4, 3, 5))
  out = infer.super_resolve(vol, _nearest([]), axis=axis, transpose_2d=False)
  reps = [2, 2, 2]
  reps[axis % 3] = 1
  np.testing.assert_allclose(out, np.kron(vol, np.ones(reps)), rtol=1e-5)


def test_image_is_not_transposed_unless_from_a_volume_format():
  img = np.arange(6.0).reshape(2, 3)
  record = []
  infer.super_resolve(img, _nearest(record), axis=2, transpose_2d=False)
  infer.super_resolve(img, _nearest(record), axis=2, transpose_2d=True)
  assert record[0].shape == (1, 2, 3) and record[1].shape == (1, 3, 2)


# ------------------------------------------------------------------------------------------------
# Round trips with the tiny exported model.


def test_png16_round_trip(tmp_path, model_dir, capsys):
  arr = (np.random.default_rng(2).random((H, W)) * 30000 + 1000).astype(np.uint16)
  PILImage.fromarray(arr).save(tmp_path / 'in.png')
  code, err = cli(capsys, model_dir=model_dir, input=tmp_path / 'in.png',
                  output=tmp_path / 'out.png')
  assert code == 0, err
  with PILImage.open(tmp_path / 'out.png') as im:
    assert im.mode == 'I;16'
    out = np.asarray(im)
  assert out.shape == (SCALE * H, SCALE * W) and out.dtype == np.uint16
  _check_range(out.astype(float), arr.min(), arr.max(), tol=1)


def test_npy_round_trip(tmp_path, model_dir, capsys):
  arr = np.random.default_rng(3).random((H, W)) * 4 - 1
  np.save(tmp_path / 'in.npy', arr)
  code, err = cli(capsys, model_dir=model_dir, input=tmp_path / 'in.npy',
                  output=tmp_path / 'out.npy')
  assert code == 0, err
  out = np.load(tmp_path / 'out.npy')
  assert out.shape == (SCALE * H, SCALE * W) and out.dtype == np.float32
  _check_range(out, arr.min(), arr.max(), tol=1e-5)


def test_nifti_round_trip_and_one_compile(tmp_path, model_dir, capsys):
  n = 7
  vol = np.random.default_rng(4).integers(0, 800, size=(W, H, n, 1)).astype(np.int16)
  affine = _nifti(tmp_path / 'in.nii.gz', vol)
  traces = infer.trace_count
  code, err = cli(capsys, model_dir=model_dir, input=tmp_path / 'in.nii.gz',
                  output=tmp_path / 'out.nii.gz', axis=2, batch_size=3)
  assert code == 0, err
  assert infer.trace_count - traces == 1  # 3 batches (the last padded), one compile
  assert err.count('infer: batch') == 3 and 'slices 7/7' in err
  o = nib.load(tmp_path / 'out.nii.gz')
  assert o.shape == (SCALE * W, SCALE * H, n, 1) and o.get_data_dtype() == np.int16
  np.testing.assert_allclose(o.header.get_zooms(), (0.45, 0.55, 2.5, 1.0), rtol=1e-6)
  scaled = affine @ np.array([[0.5, 0, 0, -0.25], [0, 0.5, 0, -0.25], [0, 0, 1, 0], [0, 0, 0, 1]])
  np.testing.assert_allclose(o.affine, scaled, atol=1e-5)
  np.testing.assert_allclose(o.header.get_qform(), scaled, atol=1e-5)
  _check_range(o.get_fdata(), vol.min(), vol.max(), tol=1)


def test_analyze_round_trip(tmp_path, model_dir, capsys):
  n = 3
  vol = np.random.default_rng(5).integers(0, 3000, size=(W, H, n, 1)).astype(np.int16)
  hdr = nib.AnalyzeHeader(endianness='>')
  hdr.set_data_dtype(np.int16)
  hdr.set_data_shape(vol.shape)
  hdr.set_zooms((1.0, 1.0, 1.0, 1.0))
  nib.AnalyzeImage(vol, None, header=hdr).to_filename(str(tmp_path / 'in.hdr'))
  code, err = cli(capsys, model_dir=model_dir, input=tmp_path / 'in.img',
                  output=tmp_path / 'out.img', axis=2, batch_size=4)
  assert code == 0, err
  assert _listing(tmp_path) == ['in.hdr', 'in.img', 'out.hdr', 'out.img']
  o = nib.load(tmp_path / 'out.hdr')
  assert o.shape == (SCALE * W, SCALE * H, n, 1) and o.get_data_dtype() == np.dtype('>i2')
  np.testing.assert_allclose(o.header.get_zooms(), (0.5, 0.5, 1.0, 1.0))
  _check_range(o.get_fdata(), vol.min(), vol.max(), tol=1)


def test_command_line(tmp_path, model_dir):
  np.save(tmp_path / 'in.npy', np.random.default_rng(6).random((H, W)))
  cmd = [sys.executable, '-m', 'medsr_jax.infer', f'--model_dir={model_dir}',
         f'--input={tmp_path / "in.npy"}', f'--output={tmp_path / "out.npy"}']
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  ok = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert ok.returncode == 0, ok.stderr
  assert np.load(tmp_path / 'out.npy').shape == (SCALE * H, SCALE * W)

  bad = subprocess.run(cmd[:4] + [f'--input={tmp_path / "nope.npy"}', cmd[5]], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1] == f'error: {tmp_path / "nope.npy"}: file not found'


# ------------------------------------------------------------------------------------------------
# Bad inputs: exit code 2, one line on stderr naming the problem, no output file.


def _write_inputs(d):
  rng = np.random.default_rng(7)
  (d / 'garbage.nii.gz').write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
  (d / 'notes.txt').write_text('not an image')
  np.save(d / 'one_d.npy', np.arange(10.0))
  np.save(d / 'four_d.npy', rng.random((4, 4, 3, 2)))
  vol = rng.random((W, H, 3)).astype(np.float32)
  nan = vol.copy()
  nan[1, 2, 0] = np.nan
  _nifti(d / 'nan.nii.gz', nan)
  inf = vol.copy()
  inf[0, 0, 1] = np.inf
  _nifti(d / 'inf.nii.gz', inf)
  _nifti(d / 'constant.nii.gz', np.full((W, H, 3), 5, np.int16))
  _nifti(d / 'good.nii.gz', vol)
  np.save(d / 'good.npy', rng.random((H, W)))


def _bad_models(model_dir, d):
  """Broken copies of the export: {name: directory}."""
  out = {'missing_dir': d / 'no_such_model'}
  no_params = d / 'no_params'
  shutil.copytree(model_dir, no_params)
  os.remove(no_params / 'params.npz')
  out['no_params'] = no_params

  wrong = d / 'wrong_shape'
  shutil.copytree(model_dir, wrong)
  with np.load(wrong / 'params.npz', allow_pickle=False) as z:
    arrays = {k: z[k] for k in z.files}
  arrays['params/conv_after_body/kernel'] = np.zeros((3, 3, 12, 13), np.float32)
  with open(wrong / 'params.npz', 'wb') as f:
    np.savez(f, **arrays)
  out['wrong_shape'] = wrong

  unknown = d / 'unknown'
  shutil.copytree(model_dir, unknown)
  cfg = json.loads((unknown / 'config.json').read_text())
  cfg['model'] = 'mystery_net'
  (unknown / 'config.json').write_text(json.dumps(cfg))
  out['unknown'] = unknown
  return out


BAD_INPUTS = [
    # (input, output, model, kwargs, expected message)
    ('missing.nii.gz', 'o.nii.gz', None, {}, 'missing.nii.gz: file not found'),
    ('garbage.nii.gz', 'o.nii.gz', None, {}, 'garbage.nii.gz: cannot read NIfTI file'),
    ('notes.txt', 'o.txt', None, {}, 'notes.txt: unsupported file type'),
    ('one_d.npy', 'o.npy', None, {}, 'one_d.npy: expected a 2-D image or a 3-D volume, got 1-D'),
    ('four_d.npy', 'o.npy', None, {}, 'four_d.npy: expected a 2-D image or a 3-D volume, got 4-D'),
    ('nan.nii.gz', 'o.nii.gz', None, {}, 'nan.nii.gz: contains 1 NaN value(s)'),
    ('inf.nii.gz', 'o.nii.gz', None, {}, 'inf.nii.gz: contains 1 infinite value(s)'),
    ('constant.nii.gz', 'o.nii.gz', None, {}, 'constant.nii.gz: every value is 5 (constant'),
    ('good.nii.gz', 'o.nii', None, {}, 'o.nii: output must have the same format as the input'),
    ('good.nii.gz', 'o.png', None, {}, 'o.png: output must have the same format'),
    ('good.npy', 'sub/o.npy', None, {}, 'does not exist'),
    ('good.npy', 'good.npy', None, {}, 'good.npy: output would overwrite the input'),
    ('good.npy', 'o.npy', None, {'batch_size': 0}, '--batch_size must be >= 1'),
    ('good.nii.gz', 'o.nii.gz', None, {'axis': 3}, '--axis must be 0, 1 or 2'),
    ('good.npy', 'o.npy', 'missing_dir', {}, 'no_such_model: model directory not found'),
    ('good.npy', 'o.npy', 'no_params', {}, 'no_params: no params.npz'),
    ('good.npy', 'o.npy', 'wrong_shape', {},
     'wrong shape: params/conv_after_body/kernel (3, 3, 12, 13) (expected (3, 3, 12, 12))'),
    ('good.npy', 'o.npy', 'unknown', {}, "unknown model 'mystery_net'"),
]


def test_bad_inputs(tmp_path, model_dir, capsys):
  inputs = tmp_path / 'in'
  inputs.mkdir()
  _write_inputs(inputs)
  bad_models = _bad_models(model_dir, tmp_path)
  before = _listing(inputs)
  for in_name, out_name, model, kw, message in BAD_INPUTS:
    out = inputs / out_name
    code, err = cli(capsys, model_dir=bad_models[model] if model else model_dir,
                    input=inputs / in_name, output=out, **kw)
    case = f'{in_name} -> {out_name} ({model}, {kw})'
    assert code == 2, case
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), (case, err)
    assert message in lines[0], (case, lines[0])
    assert _listing(inputs) == before, case  # no output, no temporary left behind
