"""Tests of `python -m medsr_jax.export`: PyTorch state-dict files <-> export directories.

  .venv/bin/python -m pytest -q tests/test_export_cli.py
"""

import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from medsr_jax import export
from medsr_jax import export_cli
from medsr_jax.errors import InputError
from tests import parity_weights

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def state_dict():
  return parity_weights.state_dict_v1(parity_weights.load_layout('rdst_e'), seed=5)


def _cli(*args):
  return subprocess.run([sys.executable, '-m', 'medsr_jax.export', *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)


def test_round_trip_through_files(tmp_path, state_dict):
  from safetensors.numpy import save_file
  src = tmp_path / 'rdst_e.safetensors'
  save_file(state_dict, str(src))
  r = _cli('--model=rdst_e', f'--from_torch={src}', f'--out={tmp_path}/exp')
  assert r.returncode == 0, r.stderr
  module, variables, config = export.load_export(tmp_path / 'exp')
  assert config['model'] == 'rdst_e' and config['param_count'] == 2_379_241
  want = export.variables_from_torch('rdst_e', state_dict, scale=4, in_channels=1)
  jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(variables), want)
  r = _cli(f'--model_dir={tmp_path}/exp', f'--to_torch={tmp_path}/back.npz')
  assert r.returncode == 0, r.stderr
  with np.load(tmp_path / 'back.npz', allow_pickle=False) as z:
    back = {k: z[k] for k in z.files}
  for k, v in state_dict.items():
    np.testing.assert_array_equal(back[k], v, err_msg=k)
  assert set(back) - set(state_dict)  # structural buffers are regenerated
  del module


def test_bad_inputs_exit_2_and_write_nothing(tmp_path, state_dict):
  bad = dict(state_dict)
  del bad['norm.bias']
  np.savez(tmp_path / 'bad.npz', **bad)
  r = _cli('--model=rdst_e', f'--from_torch={tmp_path}/bad.npz', f'--out={tmp_path}/exp')
  assert r.returncode == 2 and "'norm.bias'" in r.stderr
  assert not (tmp_path / 'exp').exists()
  (tmp_path / 'junk.npz').write_bytes(b'not a zip')
  r = _cli('--model=rdst_e', f'--from_torch={tmp_path}/junk.npz', f'--out={tmp_path}/exp')
  assert r.returncode == 2 and 'cannot read state dict' in r.stderr
  r = _cli('--model=rdst_e', f'--from_torch={tmp_path}/w.bin', f'--out={tmp_path}/exp')
  assert r.returncode == 2 and 'unsupported state-dict file' in r.stderr
  r = _cli(f'--model_dir={tmp_path}/nowhere', f'--to_torch={tmp_path}/x.npz')
  assert r.returncode == 2 and not (tmp_path / 'x.npz').exists()
  r = _cli('--model=rdst_e')
  assert r.returncode == 2 and 'give either' in r.stderr


def test_pt_files_need_torch(tmp_path):
  try:
    import torch  # noqa: F401
    pytest.skip('PyTorch is installed here')
  except ImportError:
    pass
  (tmp_path / 'w.pt').write_bytes(b'\x80\x04 pickle bytes that must never be unpickled')
  with pytest.raises(InputError, match='needs PyTorch'):
    export_cli.read_state_dict(str(tmp_path / 'w.pt'))


def test_checkpoint_wrappers_are_unwrapped():
  w = {'module.head.weight': np.zeros((2, 1, 3, 3), np.float32)}
  assert list(export_cli._unwrap({'state_dict': w}, 'f')) == ['head.weight']
  assert list(export_cli._unwrap({'epoch': 3, 'model': {'a': np.zeros(1)}}, 'f')) == ['a']
  with pytest.raises(InputError, match='not a state dict'):
    export_cli._unwrap({'epoch': 3}, 'f')
