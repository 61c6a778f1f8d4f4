"""Bad input to `python -m data_prep.build`: a clear error naming the file and exit 2, or, with
--skip_bad, the volume left out and listed in the manifest (a split it leaves without slices
needs --allow_empty_split); never a half-written shard.

  .venv/bin/python -m pytest -q tests/test_data_prep_bad.py

Cases: truncated .nii.gz, an unreadable (not NIfTI) file, a truncated Analyze .img (OASIS),
image / label shape mismatch (ACDC), NaN voxels, a missing BraTS modality, and DICOM series whose
slices are unevenly spaced, differ in orientation or differ in size.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pydicom
import pytest

from data_prep import build
from medsr_jax.data import manifest
from medsr_jax.errors import InputError, cli_main
from tests import dataset_fixtures as fx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _vol(seed, shape=(32, 36, 4)):
  t1, _ = fx.brain_block(shape[:2], [70 + seed + 3 * k for k in range(shape[2])], step=4)
  return t1.astype(np.float64) + seed


def _folder(root):
  """Two good NIfTI volumes; returns the second one's path (the one the cases spoil)."""
  fx.write_nifti(os.path.join(root, 'sub01.nii.gz'), _vol(1))
  return fx.write_nifti(os.path.join(root, 'sub02.nii.gz'), _vol(2))


def case_truncated_nifti(root):
  bad = _folder(root)
  blob = open(bad, 'rb').read()
  open(bad, 'wb').write(blob[:len(blob) // 2])
  return 'folder', [], bad, 'cannot read volume'


def case_unreadable(root):
  bad = _folder(root)
  open(bad, 'wb').write(b'this is not a NIfTI file' * 20)
  return 'folder', [], bad, 'cannot read volume'


def case_truncated_analyze(root):
  files = fx.write_oasis(root, subjects=('OAS1_0001_MR1', 'OAS1_0004_MR1'), n_slices=3)
  bad = files['OAS1_0004_MR1']['image']
  blob = open(bad, 'rb').read()
  open(bad, 'wb').write(blob[:1000])
  return 'oasis', [], bad, 'Expected .* bytes'


def case_shape_mismatch(root):
  files = fx.write_acdc(root, patients=('patient011', 'patient049'), n_slices=4)
  bad = files['patient049_frame12']['label']
  fx.write_nifti(bad, np.zeros((30, 40, 4)), np.uint8)
  return 'acdc', [], bad, 'label shape .* does not match'


def case_nan(root):
  bad = _folder(root)
  vol = _vol(2)
  vol[5, 5, 1] = np.nan
  fx.write_nifti(bad, vol, np.float32)
  return 'folder', [], bad, '1 NaN voxel'


def case_missing_modality(root):
  files = fx.write_brats(root, subjects=('HGG_Brats17_TCIA_607_1', 'LGG_Brats17_TCIA_141_1'),
                         n_slices=4, xy=(48, 48))
  bad = files['LGG_Brats17_TCIA_141_1']['image']['t2']
  os.remove(bad)
  return 'brats', [], bad, 'missing t2 modality'


def _dicom(root, **kwargs):
  fx.write_nifti(os.path.join(root, 'sub01.nii.gz'), _vol(1))
  folder = os.path.join(root, 'sub02')
  files = fx.write_dicom_series(folder, _vol(2, (20, 24, 4)), name='sub02', **kwargs)
  return folder, sorted(files)


def case_dicom_spacing(root):
  folder, _ = _dicom(root, positions=[0.0, 2.5, 5.0, 10.0])
  return 'folder', [], folder, 'uneven slice spacing'


def case_dicom_orientation(root):
  folder, files = _dicom(root)
  ds = pydicom.dcmread(files[1])
  ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]
  ds.save_as(files[1])
  return 'folder', [], folder, 'another orientation'


def case_dicom_size(root):
  folder, files = _dicom(root)
  ds = pydicom.dcmread(files[2])
  ds.Rows, ds.Columns = 10, 12
  ds.PixelData = np.zeros((10, 12), '<i2').tobytes()
  ds.save_as(files[2])
  return 'folder', [], folder, 'is 10x12 but'


CASES = [case_truncated_nifti, case_unreadable, case_truncated_analyze, case_shape_mismatch,
         case_nan, case_missing_modality, case_dicom_spacing, case_dicom_orientation,
         case_dicom_size]


def _run(argv, capsys):
  with pytest.raises(SystemExit) as e:
    cli_main(lambda: build.main(argv))
  return e.value.code, capsys.readouterr().err


def _only_listed_files(out):
  m = manifest.read_manifest(str(out))
  listed = {'manifest.json'}
  for sp in m.splits.values():
    for s in sp.shards:
      listed |= {s.file, s.index, s.file + '.volumes.json'}
  return set(os.listdir(out)) <= listed, m


@pytest.mark.parametrize('case', CASES, ids=lambda c: c.__name__[5:])
def test_bad_input_exits_2_naming_the_file_or_is_skipped(tmp_path, capsys, case):
  src = tmp_path / 'src'
  dataset, extra, bad, reason = case(str(src))
  base = [f'--dataset={dataset}', f'--src={src}', '--workers=1', '--quiet', '--shards=1',
          '--split=random:0', *extra]
  out = tmp_path / 'out'
  code, err = _run(base + [f'--out={out}'], capsys)
  assert code == 2
  assert err.startswith('error: ') and err.count('\n') == 1
  assert bad in err and re.search(reason, err), err
  ok, m = _only_listed_files(out)  # never a half-written shard, no temporary files
  assert ok and not m.complete

  out2 = tmp_path / 'skip'
  skip = ['--skip_bad']
  try:
    assert build.main(base + [f'--out={out2}', *skip]) == 0
  except InputError as e:  # two subjects: the bad one may be its split's only volume
    assert re.match(r"--skip_bad left the \w+ split without slices: its volume\(s\) ", str(e))
    assert str(e).endswith('or pass --allow_empty_split') and '\n' not in str(e)
    assert not manifest.read_manifest(str(out2)).complete  # training refuses it
    skip.append('--allow_empty_split')
    assert build.main(base + [f'--out={out2}', *skip]) == 0
  ok, m = _only_listed_files(out2)
  assert ok and m.complete
  assert len(m.skipped) == 1
  entry = m.skipped[0]
  assert bad in entry['reason'] and re.search(reason, entry['reason'])
  assert entry['shard'] in {sh.file for sp in m.splits.values() for sh in sp.shards}
  primary = os.path.join(str(src), entry['path'])  # the volume's (first) image file or series
  assert primary == bad or bad.startswith(os.path.dirname(primary))
  assert sum(sp.num_records for sp in m.splits.values()) > 0  # the good volumes are there
  # The same settings resume (finish) the build that stopped, now skipping the bad volume.
  assert build.main(base + [f'--out={out}', *skip]) == 0
  assert manifest.read_manifest(str(out)).complete


def test_bad_input_exit_code_of_the_real_command(tmp_path):
  src = tmp_path / 'src'
  _, _, bad, _ = case_nan(str(src))
  proc = subprocess.run(
      [sys.executable, '-m', 'data_prep.build', '--dataset=folder', f'--src={src}',
       f'--out={tmp_path / "out"}', '--workers=2', '--quiet'], cwd=REPO, capture_output=True,
      text=True, timeout=120, check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip() == f'error: {bad}: contains 1 NaN voxel(s)'


def test_bad_arguments_are_input_errors(tmp_path, capsys):
  fx.write_oasis(str(tmp_path / 'src'), subjects=('OAS1_0001_MR1',), n_slices=2)
  base = ['--dataset=oasis', f'--src={tmp_path / "src"}', f'--out={tmp_path / "out"}']
  for extra, message in ((['--no_labels', '--select=label'], 'selects oasis slices by'),
                         (['--crop=12'], '--crop must look like'),
                         (['--shards=train=0'], '--shards'),
                         (['--workers=0'], '--workers'),
                         (['--split=random'], '--split'),
                         (['--margin=200,10'], 'margins')):
    code, err = _run(base + extra, capsys)
    assert code == 2 and message in err, (extra, err)
  code, err = _run(['--dataset=oasis', f'--src={tmp_path / "nope"}', '--out=x'], capsys)
  assert code == 2 and 'source directory not found' in err
  code, err = _run(['--dataset=acdc', f'--src={tmp_path / "src"}', '--out=x'], capsys)
  assert code == 2 and 'no ACDC frames found' in err
