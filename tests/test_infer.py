"""Tests for `python -m medsr_jax.infer`: round trips per format, slicing, and every bad input.

  .venv/bin/python -m pytest -q tests/test_infer.py

A tiny RDST (x2, random weights) is exported once per module, and for `--scale` a tiny MIASSR
(arbitrary-scale, nominal x4) and a tiny MDSR (x2, 3, 4). Error cases run `infer.run` under
`errors.cli_main` in-process (what `main` does); one success and one failure also run the real
command in a subprocess, and so does one MIASSR run at x2.5.
"""

import json
import math
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
from medsr_jax.errors import InputError
from medsr_jax.io import images

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = dict(embed_dim=12, num_blocks=1, num_heads=2, growth_rate=6, window_size=4)
SCALE = 2
H, W = 10, 12  # in-plane size of every test input: (H, W) images, volume slices (Y, X) = (H, W)


# Tiny arbitrary-scale MIASSR (nominal x4, as the thesis trains it on (1, 4]) and tiny MDSR.
TINY_META = dict(feature_options={'n_resblocks': 1, 'n_feats': 8}, weight_hidden=16)
META_SCALE = 4.0
TINY_MDSR = dict(n_resblocks=1, n_feats=8)


def _export(tmp_path_factory, name, scale, kwargs, extra=None, std=0.05):
  """An export of model `name` with random N(0, std^2) parameters (no training)."""
  module = models.build(name, scale=scale, in_channels=1, **kwargs)
  shapes = export.expected_shapes(module)
  rng = np.random.default_rng(0)
  flat = {k.split('/', 1)[1]: (std * rng.standard_normal(v.shape)).astype(np.float32)
          for k, v in shapes.items() if k.startswith('params/')}
  d = tmp_path_factory.mktemp(name) / 'export'
  export.save_export(str(d), model_name=name, model_kwargs=kwargs, scale=scale, in_channels=1,
                     params=export.unflatten_params(flat), extra=extra)
  return d


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
  return _export(tmp_path_factory, 'rdst', SCALE, TINY, extra={'step': 1})


@pytest.fixture(scope='module')
def meta_dir(tmp_path_factory):
  # Larger weights than RDST's, so that the clipped output is not (nearly) constant.
  return _export(tmp_path_factory, 'miassr', META_SCALE, TINY_META, std=0.2)


@pytest.fixture(scope='module')
def mdsr_dir(tmp_path_factory):
  return _export(tmp_path_factory, 'mdsr', 2, TINY_MDSR)


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


# ------------------------------------------------------------------------------------------------
# --scale: arbitrary-scale (meta) models at non-integer scales, and what other models refuse.


def _sizes(n, s):
  return int(s * n)


def _nearest_at(s):
  """A "model" at scale s: output pixel (i, j) is input pixel (floor(i / s), floor(j / s))."""
  def sr(slices):
    _, h, w = slices.shape
    rows = np.floor(np.arange(_sizes(h, s)) / s).astype(int)
    cols = np.floor(np.arange(_sizes(w, s)) / s).astype(int)
    return slices[:, rows][:, :, cols]
  return sr


@pytest.mark.parametrize('axis', [0, 1, 2])
def test_volume_slices_at_a_non_integer_scale(axis):
  s = 2.5
  vol = np.random.default_rng(11).random((5, 3, 7)) * 50 - 3
  out = infer.super_resolve(vol, _nearest_at(s), axis=axis, transpose_2d=False)
  index = []
  for i, n in enumerate(vol.shape):
    index.append(np.arange(n) if i == axis else np.floor(np.arange(_sizes(n, s)) / s).astype(int))
  want = vol[np.ix_(*index)]
  assert out.shape == want.shape
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_png_at_2_5(tmp_path, meta_dir, capsys):
  h, w = 7, 9
  arr = (np.random.default_rng(12).random((h, w)) * 200 + 20).astype(np.uint8)
  PILImage.fromarray(arr).save(tmp_path / 'in.png')
  code, err = cli(capsys, model_dir=meta_dir, input=tmp_path / 'in.png',
                  output=tmp_path / 'out.png', scale=2.5)
  assert code == 0, err
  with PILImage.open(tmp_path / 'out.png') as im:
    assert im.mode == 'L'
    out = np.asarray(im)
  assert out.shape == (17, 22)  # int(2.5 * 7) x int(2.5 * 9)
  _check_range(out.astype(float), arr.min(), arr.max(), tol=1)
  assert 'note:' not in err


def _world_box(affine, shape):
  """World coordinates of the 8 outer corners of a 3-D voxel grid and of its centre."""
  corners = [[-0.5 if c == 0 else n - 0.5 for c, n in zip(bits, shape)]
             for bits in np.ndindex(2, 2, 2)]
  points = np.array(corners + [[(n - 1) / 2 for n in shape]])
  return points @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]


def test_nifti_volume_at_2_5_overlays_the_input(tmp_path, meta_dir, capsys):
  shape = (45, 7, 3)  # X = 45 becomes 112 at x2.5 (not 112.5), Y = 7 becomes 17
  vol = np.random.default_rng(13).integers(0, 900, size=shape).astype(np.int16)
  affine = _nifti(tmp_path / 'in.nii.gz', vol)
  traces = infer.trace_count
  code, err = cli(capsys, model_dir=meta_dir, input=tmp_path / 'in.nii.gz',
                  output=tmp_path / 'out.nii.gz', axis=2, batch_size=2, scale=2.5)
  assert code == 0, err
  assert infer.trace_count - traces == 1
  o = nib.load(tmp_path / 'out.nii.gz')
  assert o.shape == (112, 17, 3) and o.get_data_dtype() == np.int16
  zooms = (0.9 * 45 / 112, 1.1 * 7 / 17, 2.5)  # the exact in / out ratio, not 1 / 2.5
  np.testing.assert_allclose(o.header.get_zooms(), zooms, rtol=1e-6)
  for got in (o.affine, o.header.get_qform(), o.header.get_sform()):
    np.testing.assert_allclose(np.abs(np.diag(got)[:3]), zooms, rtol=1e-6)
    # Same field of view and centre in world space (much closer than a voxel).
    np.testing.assert_allclose(_world_box(got, o.shape), _world_box(affine, shape), atol=1e-4)
  _check_range(o.get_fdata(), vol.min(), vol.max(), tol=1)


def test_npy_volume_at_2_5(tmp_path, meta_dir, capsys):
  vol = np.random.default_rng(14).random((3, 7, 9)) * 10 - 5
  np.save(tmp_path / 'in.npy', vol)
  code, err = cli(capsys, model_dir=meta_dir, input=tmp_path / 'in.npy',
                  output=tmp_path / 'out.npy', axis=0, scale=2.5)
  assert code == 0, err
  out = np.load(tmp_path / 'out.npy')
  assert out.shape == (3, 17, 22) and out.dtype == np.float32
  _check_range(out, vol.min(), vol.max(), tol=1e-5)


def test_analyze_at_2_5(tmp_path, meta_dir, capsys):
  shape = (9, 7, 2, 1)
  vol = np.random.default_rng(15).integers(0, 3000, size=shape).astype(np.int16)
  hdr = nib.AnalyzeHeader(endianness='>')
  hdr.set_data_dtype(np.int16)
  hdr.set_data_shape(shape)
  hdr.set_zooms((1.2, 1.0, 3.0, 1.0))
  nib.AnalyzeImage(vol, None, header=hdr).to_filename(str(tmp_path / 'in.hdr'))
  code, err = cli(capsys, model_dir=meta_dir, input=tmp_path / 'in.img',
                  output=tmp_path / 'out.img', axis=2, scale=2.5)
  assert code == 0, err
  assert _listing(tmp_path) == ['in.hdr', 'in.img', 'out.hdr', 'out.img']
  o = nib.load(tmp_path / 'out.hdr')
  assert o.shape == (22, 17, 2, 1) and o.get_data_dtype() == np.dtype('>i2')
  np.testing.assert_allclose(o.header.get_zooms(), (1.2 * 9 / 22, 7 / 17, 3.0, 1.0), rtol=1e-6)
  i = nib.load(tmp_path / 'in.hdr')
  np.testing.assert_allclose(_world_box(o.affine, o.shape[:3]), _world_box(i.affine, shape[:3]),
                             atol=1e-4)
  _check_range(o.get_fdata(), vol.min(), vol.max(), tol=1)


def test_meta_model_default_and_above_training_range(tmp_path, meta_dir, capsys):
  np.save(tmp_path / 'in.npy', np.random.default_rng(16).random((H, W)))
  code, err = cli(capsys, model_dir=meta_dir, input=tmp_path / 'in.npy',
                  output=tmp_path / 'default.npy')
  assert code == 0, err
  assert np.load(tmp_path / 'default.npy').shape == (4 * H, 4 * W)  # the export's scale
  assert 'note:' not in err
  code, err = cli(capsys, model_dir=meta_dir, input=tmp_path / 'in.npy',
                  output=tmp_path / 'x4.5.npy', scale=4.5)
  assert code == 0, err
  assert np.load(tmp_path / 'x4.5.npy').shape == (int(4.5 * H), int(4.5 * W))
  notes = [line for line in err.splitlines() if line.startswith('note:')]
  assert len(notes) == 1 and 'x4' in notes[0] and 'x4.5' in notes[0], err


def test_fixed_scale_model_refuses_another_scale(tmp_path, model_dir, capsys, monkeypatch):
  np.save(tmp_path / 'in.npy', np.random.default_rng(17).random((H, W)))
  code, err = cli(capsys, model_dir=model_dir, input=tmp_path / 'in.npy',
                  output=tmp_path / 'own.npy', scale=float(SCALE))  # its own scale is fine
  assert code == 0, err
  assert np.load(tmp_path / 'own.npy').shape == (SCALE * H, SCALE * W)
  os.remove(tmp_path / 'own.npy')

  def heavy(*args, **kwargs):
    raise AssertionError('the scale must be checked before the input or the model is read')

  monkeypatch.setattr(images, 'read_image', heavy)
  monkeypatch.setattr(export, 'load_export', heavy)
  for scale, shown in ((2.5, 'x2.5'), (3, 'x3')):
    code, err = cli(capsys, model_dir=model_dir, input=tmp_path / 'in.npy',
                    output=tmp_path / 'out.npy', scale=scale)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0] == (f"error: model 'rdst' is a fixed-scale x{SCALE} model; it cannot "
                        f"super-resolve {shown} (use an arbitrary-scale model such as miassr, or "
                        "evaluate it with the up-and-down protocol: python -m medsr_jax.evaluate)")
    assert _listing(tmp_path) == ['in.npy']


@pytest.mark.parametrize('scale', [1.0, 0.5, -2.0, math.nan, math.inf])
def test_scale_must_be_finite_and_above_one(tmp_path, meta_dir, capsys, scale):
  np.save(tmp_path / 'in.npy', np.random.default_rng(18).random((H, W)))
  code, err = cli(capsys, model_dir=meta_dir, input=tmp_path / 'in.npy',
                  output=tmp_path / 'out.npy', scale=scale)
  lines = err.strip().splitlines()
  assert code == 2 and len(lines) == 1, err
  assert lines[0] == f'error: --scale must be a finite number > 1, got {scale}'
  assert _listing(tmp_path) == ['in.npy']


def test_mdsr_takes_its_own_scales_only(tmp_path, mdsr_dir, capsys):
  np.save(tmp_path / 'in.npy', np.random.default_rng(19).random((H, W)))
  code, err = cli(capsys, model_dir=mdsr_dir, input=tmp_path / 'in.npy',
                  output=tmp_path / 'x3.npy', scale=3)
  assert code == 0, err
  assert np.load(tmp_path / 'x3.npy').shape == (3 * H, 3 * W)
  for scale in (2.5, 5):
    code, err = cli(capsys, model_dir=mdsr_dir, input=tmp_path / 'in.npy',
                    output=tmp_path / 'out.npy', scale=scale)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0] == f"error: model 'mdsr' (MDSR) super-resolves x2, 3 or 4 only, not x{scale:g}"
  assert _listing(tmp_path) == ['in.npy', 'x3.npy']


def test_resolve_scale_rules():
  """The scale rules without running anything (Meta-MDSR: ceil(s) must be one of its heads)."""
  meta_mdsr = models.build('meta_mdsr', scale=4.0, feature_options={'n_resblocks': 1,
                                                                     'n_feats': 8})
  config = {'model': 'meta_mdsr', 'scale': 4.0}
  assert infer.resolve_scale(config, meta_mdsr, 3.5) == 3.5
  assert infer.resolve_scale(config, meta_mdsr, None) == 4.0
  with pytest.raises(InputError, match=r"'meta_mdsr' cannot super-resolve x4.5: its MDSR feature "
                                       r'extractor needs ceil\(scale\) to be 2, 3 or 4'):
    infer.resolve_scale(config, meta_mdsr, 4.5)
  miassr = models.build('miassr', scale=4.0, **TINY_META)
  notes = []
  assert infer.resolve_scale({'model': 'miassr', 'scale': 4.0}, miassr, 7.25, notes.append) == 7.25
  assert len(notes) == 1 and notes[0].startswith('note: miassr was trained on scales up to x4')
  assert infer.resolve_scale({'model': 'miassr', 'scale': 4.0}, miassr, 4.0, notes.append) == 4.0
  assert len(notes) == 1
  rdst = models.build('rdst', scale=4, **TINY)
  assert infer.resolve_scale({'model': 'rdst', 'scale': 4}, rdst, 4.0) == 4
  assert infer.zoom_factors((45, 7, 3), (112, 17, 3)) == [112 / 45, 17 / 7, 1.0]


def test_command_line_scale(tmp_path, meta_dir):
  np.save(tmp_path / 'in.npy', np.random.default_rng(20).random((7, 9)))
  cmd = [sys.executable, '-m', 'medsr_jax.infer', f'--model_dir={meta_dir}', '--scale=2.5',
         f'--input={tmp_path / "in.npy"}', f'--output={tmp_path / "out.npy"}']
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  ok = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert ok.returncode == 0, ok.stderr
  assert np.load(tmp_path / 'out.npy').shape == (17, 22)
  assert ok.stdout.strip().endswith('(17, 22) (x2.5)')
