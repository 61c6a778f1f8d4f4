"""Tests for medsr_jax.export: npz / safetensors export directories and their validation.

  .venv/bin/python -m pytest -q tests/test_export.py
"""

import json
import os
import shutil

import numpy as np
import pytest

from medsr_jax import export, models
from medsr_jax.errors import InputError

TINY = dict(embed_dim=12, num_blocks=1, num_heads=2, growth_rate=6, window_size=4)


def tiny_params(scale=2, seed=0):
  """Deterministic random 'params' for the tiny RDST (no init compile)."""
  module = models.build('rdst', scale=scale, in_channels=1, **TINY)
  shapes = export.expected_shapes(module)
  rng = np.random.default_rng(seed)
  flat = {k.split('/', 1)[1]: (0.05 * rng.standard_normal(v.shape)).astype(np.float32)
          for k, v in shapes.items() if k.startswith('params/')}
  return export.unflatten_params(flat)


@pytest.fixture(scope='module')
def params():
  return tiny_params()


def _save(directory, params, **kw):
  args = dict(model_name='rdst', model_kwargs=TINY, scale=2, in_channels=1, params=params,
              extra={'step': 7})
  args.update(kw)
  return export.save_export(str(directory), **args)


def test_flatten_unflatten_round_trip():
  tree = {'params': {'b': {'y': 1, 'x': 2}, 'a': 3}, 'constants': {'m': 4}}
  flat = export.flatten_params(tree)
  assert list(flat) == ['constants/m', 'params/a', 'params/b/x', 'params/b/y']
  assert export.unflatten_params(flat) == tree
  with pytest.raises(ValueError, match='cannot flatten key'):
    export.flatten_params({'a/b': 1})
  with pytest.raises(ValueError, match='both a leaf and a subtree'):
    export.unflatten_params({'a': 1, 'a/b': 2})


@pytest.mark.parametrize('fmt', ['npz', 'safetensors'])
def test_save_load_round_trip(tmp_path, params, fmt):
  config = _save(tmp_path / 'exp', params, fmt=fmt)
  files = sorted(os.listdir(tmp_path / 'exp'))
  assert files == sorted(['config.json', export.PARAM_FILES[fmt]])
  on_disk = json.loads((tmp_path / 'exp' / 'config.json').read_text())
  assert on_disk == config
  assert on_disk['model'] == 'rdst' and on_disk['scale'] == 2 and on_disk['in_channels'] == 1
  assert on_disk['model_kwargs'] == TINY and on_disk['extra'] == {'step': 7}
  assert on_disk['format_version'] == export.FORMAT_VERSION
  assert on_disk['param_count'] == models.count_params({'params': params})

  module, variables, loaded = export.load_export(str(tmp_path / 'exp'))
  assert loaded['model'] == 'rdst' and module == models.build('rdst', scale=2, **TINY)
  want = export.flatten_params({'params': params})
  got = export.flatten_params(variables)
  # RDST's MeanShift constants were filled in from the model (mean 0, std 1 by default).
  assert set(got) == set(want) | {'constants/mean_shift/mean', 'constants/mean_shift/std'}
  for k, v in want.items():
    assert got[k].dtype == np.float32
    np.testing.assert_array_equal(np.asarray(got[k]), v)
  np.testing.assert_array_equal(np.asarray(got['constants/mean_shift/std']), [1.0])


def test_npz_keys_are_sorted_slash_paths(tmp_path, params):
  _save(tmp_path / 'exp', params)
  with np.load(tmp_path / 'exp' / 'params.npz', allow_pickle=False) as z:
    keys = list(z.files)
  assert keys == sorted(keys) and 'params/head/kernel' in keys
  assert all(k.startswith(('params/', 'constants/')) for k in keys)


def test_reexport_replaces_and_drops_other_format(tmp_path, params):
  _save(tmp_path / 'exp', params, fmt='npz')
  _save(tmp_path / 'exp', params, fmt='safetensors', extra={'step': 9})
  assert sorted(os.listdir(tmp_path / 'exp')) == ['config.json', 'params.safetensors']
  assert export.load_export(str(tmp_path / 'exp'))[2]['extra'] == {'step': 9}


def _tree(directory):
  """{relative path: bytes} of every file under `directory`."""
  out = {}
  for root, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, directory)] = f.read()
  return out


@pytest.mark.parametrize('exchange', [True, False], ids=['renameat2', 'move_aside'])
def test_reexport_is_atomic_as_a_whole(tmp_path, params, monkeypatch, exchange):
  """A failed re-export (a full disk) keeps the old export whole; a successful one replaces the
  directory as a whole, leaving nothing beside it (with or without RENAME_EXCHANGE)."""
  if not exchange:
    monkeypatch.setattr(export, '_exchange', lambda a, b: False)
  exp = tmp_path / 'exp'
  _save(exp, params, extra={'step': 1})
  old = _tree(exp)
  real_write = export._write_params  # pylint: disable=protected-access

  def half_then_full(path, *args):
    real_write(path, *args)
    with open(path, 'r+b') as f:
      f.truncate(100)  # half written
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(export, '_write_params', half_then_full)
  with pytest.raises(OSError, match='No space left'):
    _save(exp, params, extra={'step': 2})
  assert _tree(exp) == old and os.listdir(tmp_path) == ['exp']
  monkeypatch.setattr(export, '_write_params', real_write)

  _save(exp, params, fmt='safetensors', extra={'step': 3})
  assert os.listdir(tmp_path) == ['exp']
  assert sorted(os.listdir(exp)) == ['config.json', 'params.safetensors']
  assert export.load_export(str(exp))[2]['extra'] == {'step': 3}


def test_leftovers_of_a_killed_save_are_ignored_then_removed(tmp_path, params):
  exp = tmp_path / 'exp'
  _save(exp, params, extra={'step': 1})
  # What kill -9 leaves: a half-written new export beside the old one (and, from the per-file
  # writes of earlier versions, a temporary file inside it).
  (tmp_path / '.exp.tmp-0123456789ab').mkdir()
  (tmp_path / '.exp.tmp-0123456789ab' / 'params.npz').write_bytes(b'PK\x03\x04')
  (exp / '.params.npz.0123456789ab.tmp').write_bytes(b'PK')
  assert export.load_export(str(exp))[2]['extra'] == {'step': 1}
  _save(exp, params, extra={'step': 2})
  assert os.listdir(tmp_path) == ['exp'] and sorted(os.listdir(exp)) == ['config.json',
                                                                          'params.npz']
  assert export.load_export(str(exp))[2]['extra'] == {'step': 2}


def test_export_refuses_a_directory_with_other_files(tmp_path, params):
  out = tmp_path / 'mine'
  out.mkdir()
  (out / 'notes.txt').write_text('keep me')
  with pytest.raises(InputError, match=r'holds notes.txt besides an export'):
    _save(out, params)
  assert os.listdir(out) == ['notes.txt'] and os.listdir(tmp_path) == ['mine']
  (tmp_path / 'file').write_text('x')
  with pytest.raises(InputError, match='is not a directory'):
    _save(tmp_path / 'file', params)
  # An empty directory, or a symlink to an export, is fine (the link stays a link).
  (out / 'notes.txt').unlink()
  _save(out, params)
  os.symlink(out, tmp_path / 'link')
  _save(tmp_path / 'link', params, extra={'step': 8})
  assert os.path.islink(tmp_path / 'link')
  assert export.load_export(str(out))[2]['extra'] == {'step': 8}


def test_save_rejects_wrong_variables_and_writes_nothing(tmp_path, params):
  bad = export.unflatten_params(dict(export.flatten_params(params)))
  bad['head']['kernel'] = np.zeros((3, 3, 1, 5), np.float32)
  with pytest.raises(ValueError, match=r'wrong shape: params/head/kernel \(3, 3, 1, 5\)'):
    _save(tmp_path / 'exp', bad)
  assert not (tmp_path / 'exp').exists()


def _rewrite_npz(path, change):
  with np.load(path, allow_pickle=False) as z:
    arrays = {k: z[k] for k in z.files}
  change(arrays)
  with open(path, 'wb') as f:
    np.savez(f, **arrays)


def test_load_errors(tmp_path, params):
  good = tmp_path / 'good'
  _save(good, params)

  def case(name, edit):
    d = tmp_path / name
    shutil.copytree(good, d)
    edit(d)
    with pytest.raises(InputError) as e:
      export.load_export(str(d))
    return str(e.value)

  with pytest.raises(InputError, match='model directory not found'):
    export.load_export(str(tmp_path / 'absent'))
  msg = case('no_params', lambda d: os.remove(d / 'params.npz'))
  assert 'no params.npz' in msg
  msg = case('no_config', lambda d: os.remove(d / 'config.json'))
  assert 'no config.json' in msg
  msg = case('bad_json', lambda d: (d / 'config.json').write_text('{"model": '))
  assert 'config.json: cannot read' in msg
  msg = case('garbage_npz', lambda d: (d / 'params.npz').write_bytes(b'PK\x03\x04garbage'))
  assert 'params.npz: cannot read parameters' in msg

  def unknown_model(d):
    cfg = json.loads((d / 'config.json').read_text())
    cfg['model'] = 'no_such_net'
    (d / 'config.json').write_text(json.dumps(cfg))
  msg = case('unknown', unknown_model)
  assert "unknown model 'no_such_net'" in msg and 'rdst' in msg

  def bad_kwargs(d):
    cfg = json.loads((d / 'config.json').read_text())
    cfg['model_kwargs']['no_such_option'] = 3
    (d / 'config.json').write_text(json.dumps(cfg))
  assert 'no_such_option' in case('bad_kwargs', bad_kwargs)

  def wrong_shape(arrays):
    arrays['params/head/kernel'] = np.zeros((3, 3, 1, 7), np.float32)
  msg = case('wrong_shape', lambda d: _rewrite_npz(d / 'params.npz', wrong_shape))
  assert 'wrong shape: params/head/kernel (3, 3, 1, 7) (expected (3, 3, 1, 12))' in msg

  def missing_and_extra(arrays):
    del arrays['params/conv_last/bias']
    arrays['params/surplus'] = np.zeros(3, np.float32)
  msg = case('keys', lambda d: _rewrite_npz(d / 'params.npz', missing_and_extra))
  assert '1 missing: params/conv_last/bias' in msg and '1 unexpected: params/surplus' in msg

  def nan(arrays):
    arrays['params/conv_last/bias'] = np.array([np.nan], np.float32)
  assert 'NaN' in case('nan', lambda d: _rewrite_npz(d / 'params.npz', nan))


def test_pickled_params_are_refused(tmp_path, params):
  d = tmp_path / 'exp'
  _save(d, params)
  with open(d / 'params.npz', 'wb') as f:
    np.savez(f, **{'params/head/kernel': np.array([{'evil': 1}], dtype=object)})
  with pytest.raises(InputError, match='cannot read parameters'):
    export.load_export(str(d))


def test_torch_hooks_are_reexported_when_present():
  try:
    import medsr_jax.export_torch as et  # pylint: disable=g-import-not-at-top
  except ImportError:
    pytest.skip('medsr_jax.export_torch not available')
  assert export.variables_from_torch is et.variables_from_torch
  assert export.variables_to_torch is et.variables_to_torch
