"""Tests of the FID Inception-v3 (models.inception), its pytorch-fid importer and metrics.fid.

  .venv/bin/python -m pytest -q tests/test_fid.py

Parity: tests/data/parity/fid_inception.npz (reference/PARITY.md, rule v1 with gain 1.0: a
2 x 3 x 139 x 139 input already in [-1, 1], `output` = the (2, 2048) pool3 features of
pytorch-fid 0.3.0's `fid_inception_v3()`). Rule-v1 weights leave the pool3 features almost
independent of the input (spread ~1e-5), which would make every FID 0 after pytorch-fid's 1e-6
shift; the metric tests therefore use the same kernels He-scaled (x sqrt 2) with identity
BatchNorms. The 299 x 299 network is compiled once (batch 3, 40 x 32 grey slices) and the
aggregation logic (channels, subjects) is checked with a cheap stand-in feature function.
"""

import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
import scipy.linalg

from medsr_jax import export
from medsr_jax import export_cli
from medsr_jax.errors import InputError
from medsr_jax.metrics import fid
from medsr_jax.metrics import frechet
from medsr_jax.models import inception
from tests import parity_weights
from tests import zoo_checks

ROOT = pathlib.Path(__file__).resolve().parents[1]
CASE = 'fid_inception'
TOTAL = 23_850_960  # pytorch-fid's fid_inception_v3(), fc (2,065,392, unused by FID) included


@pytest.fixture(scope='module')
def case():
  with np.load(parity_weights.DATA / 'parity' / f'{CASE}.npz') as z:
    return {k: z[k] for k in z.files}


@pytest.fixture(scope='module')
def torch_sd(case):
  """The rule-v1 state dict of the parity case (structural num_batches_tracked left out, as in
  pytorch-fid's own file)."""
  return parity_weights.state_dict_v1(parity_weights.load_layout(str(case['layout'])),
                                      int(case['seed']))


@pytest.fixture(scope='module')
def variables(torch_sd):
  return export.variables_from_torch(CASE, torch_sd, scale=1, in_channels=3)


@pytest.fixture(scope='module')
def he_variables(variables):
  """Kernels x sqrt(2) (He scale for ReLU nets), identity BatchNorms: input-dependent features."""
  def he(path, a):
    name = path[-1].key
    return {'kernel': a * np.float32(np.sqrt(2.0)), 'scale': np.ones_like(a),
            'bias': np.zeros_like(a), 'mean': np.zeros_like(a),
            'var': np.full_like(a, 1.0 - inception.BN_EPS)}[name]
  return jax.device_put(jax.tree_util.tree_map_with_path(he, variables))


def pytorch_fid_distance(f_a, f_b):
  """pytorch-fid's calculate_frechet_distance (scipy sqrtm, 1e-6 shift when singular)."""
  mu_a, mu_b = f_a.mean(0), f_b.mean(0)
  sa, sb = np.cov(f_a, rowvar=False), np.cov(f_b, rowvar=False)
  d = sa.shape[0]
  singular = min(len(f_a), len(f_b)) - 1 < d
  off = 1e-6 * np.eye(d) if singular else 0.0
  root = scipy.linalg.sqrtm((sa + off) @ (sb + off)).real
  return float((mu_a - mu_b) @ (mu_a - mu_b) + np.trace(sa) + np.trace(sb) - 2 * np.trace(root))


# ----------------------------------------------------------------------------------------------
# Network, layout, parity.


def test_layout_keys_and_count(variables):
  zoo_checks.check_layout_keys(CASE, CASE, 1)
  assert zoo_checks.check_trainable_count(CASE, CASE, 1) == TOTAL
  # (variables_from_torch has checked every imported shape against the model.)
  # The FID blocks' pooling branches (pytorch-fid): E_1 is Mixed_7b, E_2 Mixed_7c.
  assert [m[1] for m in inception.MIXED][-2:] == ['E_1', 'E_2']
  x = jax.ShapeDtypeStruct((2, 299, 299, 3), np.float32)
  logits = jax.eval_shape(lambda v, a: inception.FIDInceptionV3().apply(v, a, logits=True),
                          variables, x)
  assert logits.shape == (2, 1008)


def test_parity(case, variables):
  x = np.transpose(case['input'], (0, 2, 3, 1))
  y = np.asarray(jax.jit(inception.FIDInceptionV3().apply)(variables, x))
  err = parity_weights.parity_error(y, case['output'])
  print(f'{CASE}: parity err {err:.3e}')
  assert y.shape == (2, 2048) and err < 1e-4, err
  with pytest.raises(InputError, match='at least 75x75'):
    jax.eval_shape(inception.FIDInceptionV3().apply, variables, np.zeros((1, 74, 80, 3)))


# ----------------------------------------------------------------------------------------------
# Preprocessing.


def torch_bilinear_reference(img, out_h, out_w):
  """F.interpolate(bilinear, align_corners=False) of one (H, W) image by gathering the four
  neighbours of each output pixel. The source position is computed in float32 as ATen's CPU
  kernel does (ratio n_in / n_out, (dst + 0.5) * ratio - 0.5, clamped at 0): in float64 it would
  differ by up to ~1e-5 at 40 -> 299. The interpolation itself is float64."""
  def taps(n_in, n_out):
    f32 = np.float32
    src = np.maximum(f32(n_in) / f32(n_out) * (np.arange(n_out, dtype=f32) + f32(0.5)) - f32(0.5),
                     f32(0)).astype(np.float64)
    i0 = np.floor(src).astype(int)
    return i0, np.minimum(i0 + 1, n_in - 1), src - i0
  y0, y1, ly = taps(img.shape[0], out_h)
  x0, x1, lx = taps(img.shape[1], out_w)
  top = img[y0][:, x0] * (1 - lx) + img[y0][:, x1] * lx
  bottom = img[y1][:, x0] * (1 - lx) + img[y1][:, x1] * lx
  return top * (1 - ly)[:, None] + bottom * ly[:, None]


def test_preprocess_matches_reference_resize():
  # A hand-computed torch value: [0, 1] -> 4 pixels is [0, .25, .75, 1].
  np.testing.assert_allclose(fid.resize_matrix(2, 4) @ np.array([0.0, 1.0]), [0, .25, .75, 1])
  np.testing.assert_array_equal(fid.resize_matrix(299, 299), np.eye(299, dtype=np.float32))
  rng = np.random.default_rng(0)
  for h, w in ((40, 32), (320, 310), (299, 150)):
    x = rng.random((2, h, w, 1)).astype(np.float32)
    got = np.asarray(fid.preprocess(x))
    assert got.shape == (2, 299, 299, 3)
    for n in range(2):
      want = 2.0 * torch_bilinear_reference(x[n, ..., 0].astype(np.float64), 299, 299) - 1.0
      for c in range(3):  # grey replicated to RGB
        np.testing.assert_allclose(got[n, ..., c], want, atol=1e-6, err_msg=f'{h}x{w}')
  rgb = rng.random((1, 50, 60, 3)).astype(np.float32)
  got = np.asarray(fid.preprocess(rgb))
  for c in range(3):
    want = 2.0 * torch_bilinear_reference(rgb[0, ..., c].astype(np.float64), 299, 299) - 1.0
    np.testing.assert_allclose(got[0, ..., c], want, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Fréchet distance.


def test_frechet_equals_scipy_sqrtm_on_random_covariances():
  rng = np.random.default_rng(1)
  for n, m, d in ((80, 90, 24), (6, 9, 40), (30, 12, 20)):
    a = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) / np.sqrt(d)
    b = 0.3 + 1.2 * rng.standard_normal((m, d)) @ rng.standard_normal((d, d)) / np.sqrt(d)
    want = pytorch_fid_distance(a, b)
    assert frechet.frechet_distance(a, b) == pytest.approx(want, rel=1e-8, abs=1e-8)
    stats = frechet.feature_statistics(a) + frechet.feature_statistics(b)
    assert frechet.frechet_from_statistics(*stats) == pytest.approx(want, rel=1e-8, abs=1e-8)
  # Random full-rank covariances given directly.
  d = 16
  ca, cb = (q @ q.T / d + 0.1 * np.eye(d) for q in rng.standard_normal((2, d, d)))
  mu_a, mu_b = rng.standard_normal((2, d))
  root = scipy.linalg.sqrtm(ca @ cb).real
  want = (mu_a - mu_b) @ (mu_a - mu_b) + np.trace(ca + cb - 2 * root)
  assert frechet.frechet_from_statistics(mu_a, ca, mu_b, cb) == pytest.approx(want, rel=1e-10)


def test_frechet_low_rank_route_equals_full_route():
  # n + m < d takes the subspace route; it must equal the d x d computation.
  rng = np.random.default_rng(2)
  a, b = rng.standard_normal((12, 300)), 0.1 + 2.0 * rng.standard_normal((9, 300))
  full = frechet.frechet_from_statistics(*frechet.feature_statistics(a),
                                         *frechet.feature_statistics(b))
  assert frechet.frechet_distance(a, b) == pytest.approx(full, rel=1e-10)
  assert frechet.frechet_distance(a, a) == 0.0  # -2 d eps, clamped


# ----------------------------------------------------------------------------------------------
# The metric with the real network (one 299 x 299 compilation: batch 3, 40 x 32 x 1).


def test_fid_with_network(he_variables):
  rng = np.random.default_rng(3)
  real = rng.random((3, 40, 32, 1)).astype(np.float32)
  fake = (0.5 * real + 0.25 + 0.05 * rng.standard_normal(real.shape)).astype(np.float32)
  before = fid._network_batch._cache_size()  # pylint: disable=protected-access
  f_real = fid.inception_features(he_variables, real, batch_size=3)
  f_fake = fid.inception_features(he_variables, fake, batch_size=3)
  assert f_real.shape == (3, 2048) and f_real.dtype == np.float64
  assert np.std(f_real, axis=0).mean() > 1e-3  # the features depend on the image
  value = fid.fid(real, fake, he_variables, batch_size=3)
  assert value > 1.0  # (scipy's sqrtm at d = 2048 takes ~40 s: the distance is checked above)
  assert value == pytest.approx(frechet.frechet_distance(f_fake, f_real), rel=1e-9)
  assert fid.fid(real, real, he_variables, batch_size=3) < 1e-6
  report = fid.fid_per_subject(real, fake, he_variables, ['a', 'a', 'b'], batch_size=3)
  assert report['skipped'] == ['b'] and report['per_subject']['b'] is None
  assert report['subjects'] == 1
  assert report['value'] == pytest.approx(frechet.frechet_distance(f_fake[:2], f_real[:2]),
                                         rel=1e-9)
  # Another image size (another evaluation scale) resizes to 299 first: no new network program.
  fid.inception_features(he_variables, real[:, :20, :16], batch_size=3)
  after = fid._network_batch._cache_size()  # pylint: disable=protected-access
  assert after - before <= 1  # one network compilation for the batch size


def fake_features(variables, images, batch_size=16):
  """A cheap stand-in for inception_features: 4 x 4 block means of a (N, 8, 8, 1|3) batch."""
  del variables, batch_size
  x = np.asarray(images, np.float64)
  n, _, _, c = x.shape
  assert c in (1, 3)
  return x.reshape(n, 4, 2, 4, 2, c).mean(axis=(2, 4)).reshape(n, -1) * 10.0


def test_channels_and_subjects_aggregation(monkeypatch):
  monkeypatch.setattr(fid, 'inception_features', fake_features)
  rng = np.random.default_rng(4)
  real = rng.random((7, 8, 8, 2))
  fake = np.clip(real + 0.2 * rng.standard_normal(real.shape), 0, 1)
  subjects = ['s1'] * 3 + ['s2'] * 3 + ['s3']
  report = fid.fid_per_subject(real, fake, None, subjects)
  want = {}
  for s, idx in (('s1', slice(0, 3)), ('s2', slice(3, 6))):
    per_c = [pytorch_fid_distance(fake_features(None, fake[idx, ..., c:c + 1]),
                                  fake_features(None, real[idx, ..., c:c + 1])) for c in range(2)]
    np.testing.assert_allclose(report['per_subject_channels'][s], per_c, rtol=1e-6)
    want[s] = np.mean(per_c)
  assert report['per_subject']['s3'] is None
  for s in want:
    assert report['per_subject'][s] == pytest.approx(want[s], rel=1e-6)
  assert report['value'] == pytest.approx(np.mean(list(want.values())), rel=1e-6)
  assert report['std'] == pytest.approx(np.std(list(want.values())), rel=1e-5)
  assert report['skipped'] == ['s3'] and report['subjects'] == 2
  assert len(report['per_channel']) == 2
  # fid(): one set, mean over channels; RGB (C = 3) is one set of RGB images.
  assert fid.fid(real, fake, None) == pytest.approx(np.mean(fid.fid_per_channel(real, fake, None)))
  rgb_r, rgb_f = rng.random((4, 8, 8, 3)), rng.random((4, 8, 8, 3))
  assert fid.fid_per_channel(rgb_r, rgb_f, None) == [pytest.approx(pytorch_fid_distance(
      fake_features(None, rgb_f), fake_features(None, rgb_r)), rel=1e-6)]
  assert fid.fid_per_subject(real, fake, None)['subjects'] == 1  # None: one subject
  with pytest.raises(InputError, match='2 ids for 7 slices'):
    fid.fid_per_subject(real, fake, None, ['a', 'b'])


def test_bad_images(variables):
  with pytest.raises(InputError, match='4 channels'):
    fid.inception_features(variables, np.zeros((2, 80, 80, 4)))
  with pytest.raises(InputError, match='NaN'):
    fid.inception_features(variables, np.full((2, 80, 80, 1), np.nan))
  with pytest.raises(InputError, match=r'\(N, H, W, C\)'):
    fid.fid(np.zeros((2, 8, 8)), np.zeros((2, 8, 8)), variables)
  with pytest.raises(InputError, match='channels'):
    fid.fid(np.zeros((2, 8, 8, 1)), np.zeros((2, 8, 8, 2)), variables)


# ----------------------------------------------------------------------------------------------
# Weights: loading, errors, the conversion command.


def _one_line_error(path, match=None):
  with pytest.raises(InputError) as info:
    fid.load_fid_inception(path)
  msg = str(info.value)
  assert '\n' not in msg
  if match:
    assert match in msg, msg
  return msg


def test_missing_and_wrong_weights_are_one_line_errors(tmp_path):
  for path in (tmp_path / 'nothing' / fid.WEIGHTS_FILE, tmp_path / 'no_dir', None):
    msg = _one_line_error(path)
    assert fid.WEIGHTS_URL in msg and '--model=fid_inception' in msg
  np.savez(tmp_path / 'other.npz', **{'conv1.weight': np.zeros((2, 3, 3, 3), np.float32)})
  _one_line_error(tmp_path / 'other.npz', 'no Mixed_7c.* tensors')
  (tmp_path / 'bad.safetensors').write_bytes(b'not a safetensors file')
  _one_line_error(tmp_path / 'bad.safetensors', 'cannot read')
  try:
    import torch  # noqa: F401
  except ImportError:
    (tmp_path / fid.WEIGHTS_FILE).write_bytes(b'\x80\x04 pickle bytes never unpickled')
    _one_line_error(tmp_path / fid.WEIGHTS_FILE, 'needs PyTorch')


def test_export_cli_round_trip(tmp_path, torch_sd, variables):
  from safetensors.numpy import save_file
  src = tmp_path / 'fid_weights.safetensors'
  save_file(torch_sd, str(src))
  r = subprocess.run([sys.executable, '-m', 'medsr_jax.export', '--model=fid_inception',
                      f'--from_torch={src}', f'--out={tmp_path}/exp'],
                     cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr
  assert f'{TOTAL:,} params' in r.stdout, r.stdout
  loaded = fid.load_fid_inception(tmp_path / 'exp')
  check = lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  jax.tree_util.tree_map(check, loaded, variables)
  jax.tree_util.tree_map(check, fid.load_fid_inception(tmp_path / 'exp' / 'params.npz'),
                         variables)
  # Back to pytorch-fid's keys, and that .npz loads as weights too.
  back = export_cli.export_torch_file(str(tmp_path / 'exp'), str(tmp_path / 'back.npz'))
  assert [k for k in back if not k.endswith('num_batches_tracked')] == list(torch_sd)
  for k, v in torch_sd.items():
    np.testing.assert_array_equal(back[k], v, err_msg=k)
  jax.tree_util.tree_map(check, fid.load_fid_inception(tmp_path / 'back.npz'), variables)
