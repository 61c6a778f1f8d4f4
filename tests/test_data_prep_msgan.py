"""Tests of the chapter-3 (MS-GAN / lesion-focused SR) protocol of `data_prep.build`.

  .venv/bin/python -m pytest -q tests/test_data_prep_msgan.py

`--dataset=brats --protocol=msgan` on tiny BraTS volumes (tests/dataset_fixtures.py), read back
and compared with what is computed here from the NIfTI files with nibabel and NumPy: whole
240x240 t1ce slices that hold any tumour label, divided by the dataset's maximum over those
slices, the lesion centre of each record, and the slice-level split (thesis proportions,
disjoint, deterministic for any --workers, resumable). Also the record field's decoding and the
command-line errors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from data_prep import build
from data_prep import splits
from data_prep import writer
from medsr_jax.data import manifest
from medsr_jax.data import records
from medsr_jax.errors import InputError
from tests import dataset_fixtures as fx
from tests.test_data_prep import read_split

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBJECTS = ('HGG_Brats17_TCIA_607_1', 'HGG_Brats17_2013_5_1', 'LGG_Brats17_TCIA_141_1')
N_SLICES = 9
TUMOUR = (1, 2, 3, 4, 5, 6)   # tissue-derived labels 1, 2, 4; slice 7: 10 voxels of label 1
HOT = 30000                   # a voxel on slice 0 (no tumour): must not set the divisor


@pytest.fixture(scope='module')
def brats(tmp_path_factory):
  """Three BraTS subjects; slice 0 of the first has a very bright voxel and slice 2 a negative
  one (both in t1ce)."""
  root = tmp_path_factory.mktemp('msgan') / 'brats'
  files = fx.write_brats(str(root), subjects=SUBJECTS, n_slices=N_SLICES, tumour_slices=TUMOUR,
                         small_label_slice=7)
  path = files[SUBJECTS[0]]['image']['t1ce']
  img = nib.load(path)
  data = np.asarray(img.dataobj).astype(np.int16)
  data[5, 7, 0] = HOT
  data[0, 0, 2] = -50
  fx.write_nifti(path, data, np.int16, affine=img.affine)
  return root, files


def run(src, out, *extra, workers=1):
  argv = ['--dataset=brats', '--protocol=msgan', f'--src={src}', f'--out={out}',
          f'--workers={workers}', '--quiet', *extra]
  assert build.main(argv) == 0
  return manifest.read_manifest(str(out))


def tree_bytes(out):
  return {n: (out / n).read_bytes() for n in sorted(os.listdir(out))}


def expected(files):
  """{(subject, k): (raw t1ce slice, raw label slice)} of the tumour slices, and the divisor."""
  want, top = {}, -np.inf
  for sid in SUBJECTS:
    t1ce = np.asarray(nib.load(files[sid]['image']['t1ce']).dataobj, np.float64)
    seg = np.asarray(nib.load(files[sid]['label']).dataobj)
    for k in range(t1ce.shape[2]):
      lab = seg[:, :, k].T
      if (lab > 0).any():  # the whole tumour: every label fused, one voxel is enough
        want[(sid, k)] = (t1ce[:, :, k].T, lab)
        top = max(top, t1ce[:, :, k].max())
  return want, float(top)


# ----------------------------------------------------------------------------------------------
# Slices, intensities, labels, centres.


def test_whole_tumour_slices_divided_by_the_dataset_maximum(brats, tmp_path):
  root, files = brats
  out = tmp_path / 'out'
  m = run(root, out)
  want, divisor = expected(files)
  assert sorted({k for _, k in want}) == [1, 2, 3, 4, 5, 6, 7]  # slice 7: 10 voxels suffice
  assert divisor < HOT  # the bright voxel is on a slice without tumour
  assert m.settings['intensity_divisor'] == divisor
  assert isinstance(m.settings['intensity_divisor'], float)
  assert m.settings['normalisation']['kind'] == 'dataset_max'
  assert m.modalities == ['t1ce'] and m.channels == 1 and m.slice_shape == [240, 240, 1]
  assert m.settings['crop'] == {'kind': 'none'} and m.complete

  got = {}
  for split in splits.SPLITS:
    for r in read_split(out, split):
      assert (r.subject, r.slice_index) not in got
      got[(r.subject, r.slice_index)] = r
  assert sorted(got) == sorted(want)
  for key, r in got.items():
    raw, lab = want[key]
    assert r.image.shape == (240, 240, 1) and r.image.dtype == np.float32
    assert r.source_shape == (240, 240) and r.crop_offset == (0, 0)
    img = np.clip(raw / divisor, 0.0, 1.0).astype(np.float32)
    np.testing.assert_array_equal(r.image[..., 0], img)
    np.testing.assert_array_equal(r.label, np.where(lab == 4, 3, lab).astype(np.uint8))
    rows, cols = np.nonzero(lab > 0)
    assert r.lesion_centre == (rows.mean(), cols.mean())
    np.testing.assert_array_equal(r.intensity, [[0.0, divisor]])
    assert r.modalities == ['t1ce'] and r.dataset == 'brats'
  assert got[(SUBJECTS[0], 2)].image.min() == 0.0  # the negative voxel is clipped to 0
  assert max(float(r.image.max()) for r in got.values()) == 1.0


# ----------------------------------------------------------------------------------------------
# The slice-level split.


def test_slice_split_has_the_thesis_proportions_and_is_deterministic():
  rng = np.random.default_rng(0)
  selected, n = [], 0
  for i in range(163):  # 163 subjects, 11,927 tumour slices as in the thesis
    count = 74 if i < 28 else 73
    start = int(rng.integers(0, 60))
    selected.append((f'S{i:03d}', f'S{i:03d}', list(range(start, start + count))))
    n += count
  assert n == 11927
  out, info = splits.slice_split(splits.SplitRule('slices', seed=3, val_fraction=0.05), selected)
  sizes = {s: sum(len(v) for v in out[s].values()) for s in splits.SPLITS}
  assert sizes == {'test': 2368, 'val': 478, 'train': 9081} == info['slices']
  thesis, _ = splits.slice_split(splits.SplitRule('slices', seed=3, val_fraction=0.0), selected)
  assert {s: sum(len(v) for v in thesis[s].values()) for s in splits.SPLITS} == {
      'test': 2368, 'val': 0, 'train': 9559}
  assert thesis['test'] == out['test']  # the validation fraction only moves train slices
  # Disjoint and complete.
  seen = [(vol, k) for s in splits.SPLITS for vol, ks in out[s].items() for k in ks]
  assert len(seen) == len(set(seen)) == 11927
  # Slice level: most subjects have both train and test slices.
  assert len(set(out['train']) & set(out['test'])) > 150
  # Same seed, any input order -> same split; another seed -> another split.
  again, _ = splits.slice_split(splits.SplitRule('slices', seed=3, val_fraction=0.05),
                                selected[::-1])
  assert again == out
  other, _ = splits.slice_split(splits.SplitRule('slices', seed=4, val_fraction=0.05), selected)
  assert other['test'] != out['test']
  assert splits.slice_counts(2, 0.05) == (1, 0) and splits.slice_counts(1, 0.05) == (0, 0)


def test_split_in_the_build_is_disjoint_and_matches_the_manifest(brats, tmp_path):
  root, files = brats
  out = tmp_path / 'out'
  m = run(root, out, '--split=slices:7:0.2')
  want, _ = expected(files)
  keys = {s: [(r.subject, r.slice_index) for r in read_split(out, s)] for s in splits.SPLITS}
  n = len(want)
  n_test, n_val = splits.slice_counts(n, 0.2)
  assert (n_test, n_val) == (4, 3)  # 21 slices: round(21 x 2368 / 11927) = 4, round(17 x 0.2)
  assert {s: len(v) for s, v in keys.items()} == {'test': n_test, 'val': n_val,
                                                   'train': n - n_test - n_val}
  assert m.settings['split']['slices'] == {s: len(v) for s, v in keys.items()}
  assert m.settings['split']['rule'] == 'slices' and m.settings['split']['seed'] == 7
  for s in splits.SPLITS:
    assert m.splits[s].num_records == len(keys[s])
    assert m.splits[s].subjects == sorted({sid for sid, _ in keys[s]})
  all_keys = [k for v in keys.values() for k in v]
  assert len(set(all_keys)) == len(all_keys) == n  # train / val / test disjoint, nothing lost
  # Each slice's split is the one of its key's rank (independent of the build's order).
  ranked = sorted(want, key=lambda sk: (splits.slice_key(7, sk[0], sk[0], sk[1]), sk))
  assert sorted(keys['test']) == sorted(ranked[:n_test])
  assert sorted(keys['val']) == sorted(ranked[n_test:n_test + n_val])


def test_same_bytes_for_any_workers_and_after_an_interrupted_build(brats, tmp_path,
                                                                    monkeypatch):
  root, _ = brats
  sharded = ('--shards=train=2,val=1,test=1',)
  run(root, tmp_path / 'one', *sharded, workers=1)
  run(root, tmp_path / 'two', *sharded, workers=2)
  clean = tree_bytes(tmp_path / 'one')
  assert len([n for n in clean if n.endswith('.tfrecord')]) == 4
  assert tree_bytes(tmp_path / 'two') == clean

  def fail(name):
    raise KeyboardInterrupt(f'injected after {name}')

  out = tmp_path / 'resumed'
  monkeypatch.setattr(writer, '_after_shard_hook', fail)
  with pytest.raises(KeyboardInterrupt):
    run(root, out, *sharded)
  m = manifest.read_manifest(str(out))
  assert not m.complete and m.settings['intensity_divisor'] == expected(brats[1])[1]
  monkeypatch.setattr(writer, '_after_shard_hook', None)
  run(root, out, *sharded)  # recomputes the divisor: the same, so the settings match
  assert tree_bytes(out) == clean


def test_subject_level_split_uses_only_the_volumes_of_its_subjects(brats, tmp_path):
  root, files = brats
  m = run(root, tmp_path / 'out', '--split=file:' + str(_split_file(tmp_path)))
  # The first subject (with the bright voxel and the dataset's other values) is not used.
  want, _ = expected(files)
  top = max(float(raw.max()) for (sid, _), (raw, _) in want.items() if sid != SUBJECTS[0])
  assert m.settings['intensity_divisor'] == top
  assert m.splits['train'].subjects == [SUBJECTS[1]] and m.splits['val'].subjects == []
  assert m.splits['test'].subjects == [SUBJECTS[2]]


def _split_file(tmp_path):
  path = tmp_path / 'split.json'
  path.write_text(json.dumps({'train': [SUBJECTS[1]], 'test': [SUBJECTS[2]]}))
  return path


def test_skip_bad_lists_a_volume_that_fails_the_first_pass(tmp_path):
  root = tmp_path / 'brats'
  files = fx.write_brats(str(root), subjects=SUBJECTS[:2], n_slices=4, tumour_slices=(1, 2),
                         small_label_slice=None)
  os.remove(files[SUBJECTS[1]]['image']['t1ce'])
  with pytest.raises(InputError, match='missing t1ce'):
    run(root, tmp_path / 'stop')
  m = run(root, tmp_path / 'out', '--skip_bad')
  assert [s['volume'] for s in m.skipped] == [SUBJECTS[1]]
  assert m.complete and sum(sp.num_records for sp in m.splits.values()) == 2


# ----------------------------------------------------------------------------------------------
# The record field and the command line.


def test_lesion_centre_round_trip_and_old_records_without_it():
  rec = records.SliceRecord(
      image=np.zeros((4, 6, 1), np.float32), subject='s', slice_index=3, spacing=(1, 1, 1),
      affine=np.eye(4), orientation='RAS', modalities=['t1ce'], intensity=(0.0, 1.0),
      dataset='brats', label=np.zeros((4, 6), np.uint8))
  old = records.encode_slice(rec)  # as written before the field existed
  assert b'lesion_centre' not in old
  assert records.decode_slice(old).lesion_centre is None
  rec.lesion_centre = (1.0 / 3.0, 123.456789012345678)
  back = records.decode_slice(records.encode_slice(rec))
  assert back.lesion_centre == rec.lesion_centre  # float64, exactly
  features = records.decode_example(records.encode_slice(rec))
  assert len(features['lesion_centre'][0]) == 16
  features['lesion_centre'] = [b'\0' * 8]
  with pytest.raises(records.RecordFormatError, match='lesion_centre'):
    records.decode_slice(records.encode_example(features))
  rec.lesion_centre = (float('nan'), 1.0)
  with pytest.raises(ValueError, match='lesion_centre'):
    records.encode_slice(rec)


def test_msgan_refuses_other_datasets_modalities_and_splits(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'data_prep.build', '--dataset=oasis', '--protocol=msgan',
       f'--src={tmp_path}', f'--out={tmp_path / "out"}'], cwd=REPO, capture_output=True,
      text=True, timeout=120, check=False)
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: --protocol=msgan supports')
  assert '--dataset=brats' in lines[0]
  base = ['--dataset=brats', f'--src={tmp_path}', f'--out={tmp_path / "o"}', '--quiet']
  with pytest.raises(InputError, match='t1ce channel only'):
    build.main(base + ['--protocol=msgan', '--modalities=t1ce,flair'])
  with pytest.raises(InputError, match='slice-level split.*msgan'):
    build.main(base + ['--split=slices:0'])
  with pytest.raises(InputError, match='0 <= VAL < 1'):
    build.main(base + ['--protocol=msgan', '--split=slices:0:1.5'])
