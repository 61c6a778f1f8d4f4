"""Tests of `python -m data_prep.build` on tiny datasets in each public dataset's real layout.

  .venv/bin/python -m pytest -q tests/test_data_prep.py

The fixtures (tests/dataset_fixtures.py) are written in the real formats (Analyze big-endian int16
for OASIS, .nii.gz for the others) from the embedded sample. Every build is read back and compared
with slices computed here independently of data_prep: the files are read with nibabel, sliced,
selected, min-max normalised and cropped with `medsr_jax.data.volumes` and plain NumPy, following
reference spec §4.1-4.2. Also: the thesis / fallback splits, determinism for any --workers,
resume after an injected failure, and the TFRecord framing decoded with struct + google_crc32c.
Bad input: tests/test_data_prep_bad.py; the `folder` dataset (NIfTI, Analyze, DICOM):
tests/test_data_prep_folder.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys

import google_crc32c
import nibabel as nib
import numpy as np
import pytest

from data_prep import build
from data_prep import readers
from data_prep import splits
from data_prep import writer
from medsr_jax.data import manifest
from medsr_jax.data import records
from medsr_jax.data import volumes
from medsr_jax.errors import InputError
from medsr_jax.io import tfrecord
from tests import dataset_fixtures as fx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------------------------
# Helpers: build, read back, and the independent expectation.


def run_build(src, out, dataset, *extra):
  argv = [f'--dataset={dataset}', f'--src={src}', f'--out={out}', '--workers=1', '--quiet',
          *extra]
  assert build.main(argv) == 0
  return manifest.read_manifest(str(out))


def read_split(out, split):
  m = manifest.read_manifest(str(out))
  recs = []
  for shard in m.splits[split].shards:
    recs += [records.decode_slice(r) for r in tfrecord.read_records(os.path.join(out, shard.file))]
  return recs


def by_subject(recs):
  out = {}
  for r in recs:
    out.setdefault(r.subject, []).append(r)
  return out


def image(path):
  return nib.load(str(path)).get_fdata()


def label(path):
  return np.asarray(nib.load(str(path)).dataobj)


def ref_centre_crop(x, hw):
  """The reference's CentreCrop on stacked slices: no padding, smaller axes kept whole."""
  h, w = hw
  top, left = max((x.shape[1] - h) // 2, 0), max((x.shape[2] - w) // 2, 0)
  return x[:, top:top + h, left:left + w]


def expected(channels, lab=None, select='nonempty', threshold=100.0, crop=('margin', (24, 24)),
             label_map=()):
  """(slice indices, images (n, h, w, C) float32, labels (n, h, w) uint8 | None, ranges)."""
  chans = [volumes.axial_slices(np.squeeze(c)) for c in channels]
  labs = None if lab is None else volumes.axial_slices(np.squeeze(lab))
  if select == 'nonempty':
    keep = np.flatnonzero(np.sum(chans[0], axis=(1, 2)) > 0)
  elif select == 'label':
    keep = np.flatnonzero(np.sum(labs, axis=(1, 2)) > threshold)
  else:
    keep = np.arange(chans[0].shape[0])
  imgs = np.stack([volumes.minmax_normalise(c[keep]) for c in chans], axis=-1)
  ranges = [(float(c[keep].min()), float(c[keep].max())) for c in chans]
  out_lab = None
  if labs is not None:
    out_lab = labs[keep].astype(np.int64)
    for a, b in label_map:
      out_lab[out_lab == a] = b
    out_lab = out_lab.astype(np.uint8)
  kind, size = crop
  cut = {'margin': lambda x: volumes.margin_crop(x, size),
         'centre': lambda x: ref_centre_crop(x, size),
         'edge': lambda x: volumes.center_crop(x, size),
         'none': lambda x: x}[kind]
  return keep, cut(imgs), None if out_lab is None else cut(out_lab), ranges


def check_records(recs, want, *, subject, dataset, modalities, affine, spacing):
  keep, imgs, labs, ranges = want
  assert [r.slice_index for r in recs] == keep.tolist()
  for i, r in enumerate(recs):
    np.testing.assert_array_equal(r.image, imgs[i])
    assert r.image.dtype == np.float32
    if labs is None:
      assert r.label is None
    else:
      np.testing.assert_array_equal(r.label, labs[i])
    assert r.subject == subject and r.dataset == dataset
    assert list(r.modalities) == list(modalities)
    np.testing.assert_allclose(r.spacing, spacing, rtol=1e-6)
    np.testing.assert_allclose(r.affine, affine, rtol=1e-6, atol=1e-5)
    assert r.orientation == ''.join(nib.aff2axcodes(affine))
    np.testing.assert_allclose(r.intensity, ranges, rtol=1e-6)  # every channel's (min, max)


def sidecars(out):
  m = manifest.read_manifest(str(out))
  vols = {}
  for sp in m.splits.values():
    for shard in sp.shards:
      with open(os.path.join(out, shard.file + writer.VOLUMES_SUFFIX), encoding='utf-8') as f:
        for v in json.load(f)['volumes']:
          vols.setdefault(v['volume'], v)
  return vols


def tree_bytes(out):
  return {name: open(os.path.join(out, name), 'rb').read() for name in sorted(os.listdir(out))}


# ----------------------------------------------------------------------------------------------
# OASIS-1.

OASIS_SUBJECTS = ('OAS1_0001_MR1', 'OAS1_0009_MR1', 'OAS1_0004_MR1', 'OAS1_0099_MR1')


@pytest.mark.parametrize('protocol,margins,shape', [('rdst', (24, 24), [160, 128, 1]),
                                                    ('miassr', (14, 16), [180, 144, 1])])
def test_oasis_records_equal_independent_slices(tmp_path, protocol, margins, shape):
  files = fx.write_oasis(str(tmp_path / 'oasis'), subjects=OASIS_SUBJECTS, n_slices=5)
  hdr = nib.load(files['OAS1_0001_MR1']['image']).header
  assert hdr.endianness == '>' and hdr.get_data_dtype() == np.dtype('>i2')  # the real format
  assert nib.load(files['OAS1_0001_MR1']['image']).shape == (176, 208, 5, 1)
  out = tmp_path / 'out'
  m = run_build(tmp_path / 'oasis', out, 'oasis', f'--protocol={protocol}')

  assert m.complete and m.dataset == 'oasis' and m.protocol == protocol
  assert m.modalities == ['t1'] and m.channels == 1 and m.has_labels
  assert m.slice_shape == shape
  assert m.splits['train'].subjects == ['OAS1_0001_MR1']
  assert m.splits['val'].subjects == ['OAS1_0009_MR1']
  assert m.splits['test'].subjects == ['OAS1_0004_MR1', 'OAS1_0009_MR1']  # val is in test
  info = m.settings['split']
  assert info['rule'] == 'thesis' and 'OAS1_0002_MR1' in info['missing']
  assert info['unused_subjects'] == 1  # OAS1_0099_MR1
  assert m.settings['crop'] == {'kind': 'margin', 'margins': list(margins)}
  assert m.sources == [str(tmp_path / 'oasis')]

  for split in ('train', 'val', 'test'):
    recs = by_subject(read_split(out, split))
    assert sorted(recs) == m.splits[split].subjects
    for sid, got in recs.items():
      img = nib.load(files[sid]['image'])
      want = expected([image(files[sid]['image'])], label(files[sid]['label']),
                      crop=('margin', margins))
      assert want[0].tolist() == [1, 2, 3, 4]  # slice 0 is empty
      check_records(got, want, subject=sid, dataset='oasis', modalities=['t1'],
                    affine=img.affine, spacing=(1.0, 1.0, 1.0))
      # The record alone places the slice back on the source grid.
      assert all(r.crop_offset == margins and r.source_shape == (208, 176) for r in got)
      assert all(r.volume == r.subject for r in got)
  # val slices are written twice (val and test), like the thesis lists.
  assert m.splits['test'].num_records == 2 * m.splits['val'].num_records
  vol = sidecars(out)['OAS1_0001_MR1']
  assert vol['crop_offset'] == list(margins) and vol['slice_shape_before_crop'] == [208, 176]
  assert vol['sources'][0].endswith('T88_111/OAS1_0001_MR1_mpr_n4_anon_111_t88_masked_gfc.img')


# ----------------------------------------------------------------------------------------------
# BraTS.

BRATS_SUBJECTS = ('HGG_Brats17_TCIA_607_1', 'HGG_Brats17_2013_5_1', 'LGG_Brats17_TCIA_141_1')


def test_brats_rdst_stacks_modalities_selects_tumour_slices_and_remaps(tmp_path):
  files = fx.write_brats(str(tmp_path / 'brats'), subjects=BRATS_SUBJECTS, n_slices=6)
  out = tmp_path / 'out'
  m = run_build(tmp_path / 'brats', out, 'brats')
  assert m.modalities == ['t1ce', 't1', 't2', 'flair'] and m.channels == 4
  assert m.slice_shape == [192, 192, 4]
  assert m.splits['train'].subjects == ['HGG_Brats17_TCIA_607_1']
  assert m.splits['test'].subjects == ['HGG_Brats17_2013_5_1', 'LGG_Brats17_TCIA_141_1']
  vols = sidecars(out)
  for split in ('train', 'test'):
    for sid, got in by_subject(read_split(out, split)).items():
      chans = [image(files[sid]['image'][mod]) for mod in fx.BRATS_MODALITIES]
      seg = label(files[sid]['label'])
      want = expected(chans, seg, select='label', crop=('centre', (192, 192)),
                      label_map=((4, 3),))
      assert want[0].tolist() == [1, 2, 3]  # the 10-voxel slice 4 (sum 10) is left out
      check_records(got, want, subject=sid, dataset='brats', modalities=fx.BRATS_MODALITIES,
                    affine=nib.load(files[sid]['label']).affine, spacing=(1, 1, 1))
      assert set(np.unique(np.stack([r.label for r in got]))) == {0, 1, 2, 3}
      assert vols[sid]['intensity'] == [list(r) for r in want[3]]  # every channel's range
      assert vols[sid]['crop_offset'] == [24, 24]


def test_brats_miassr_one_modality_nonempty_and_margin(tmp_path):
  files = fx.write_brats(str(tmp_path / 'brats'), subjects=BRATS_SUBJECTS, n_slices=4)
  out = tmp_path / 'out'
  m = run_build(tmp_path / 'brats', out, 'brats', '--protocol=miassr', '--modalities=t1ce')
  assert m.modalities == ['t1ce'] and m.slice_shape == [180, 170, 1]
  for sid, got in by_subject(read_split(out, 'test')).items():
    want = expected([image(files[sid]['image']['t1ce'])], label(files[sid]['label']),
                    crop=('margin', (30, 35)), label_map=((4, 3),))
    check_records(got, want, subject=sid, dataset='brats', modalities=['t1ce'],
                  affine=nib.load(files[sid]['label']).affine, spacing=(1, 1, 1))


def test_brats_flat_layouts_and_2023_names(tmp_path):
  fx.write_brats(str(tmp_path / 'b20'), subjects=('BraTS20_Training_001', 'BraTS20_Training_002'),
                 n_slices=2, layout='flat', xy=(40, 40))
  found = readers.reader('brats').discover(str(tmp_path / 'b20'), readers.ReaderOptions())
  assert found.layout == 'flat' and [v.subject for v in found.volumes] == [
      'BraTS20_Training_001', 'BraTS20_Training_002']
  assert found.volumes[0].images[0].endswith('BraTS20_Training_001_t1ce.nii.gz')
  name = 'BraTS-GLI-00000-000'
  for key in ('t1c', 't1n', 't2w', 't2f', 'seg'):
    fx.write_nifti(str(tmp_path / 'b23' / name / f'{name}-{key}.nii.gz'), np.ones((4, 4, 2)))
  spec = readers.reader('brats').discover(str(tmp_path / 'b23'), readers.ReaderOptions()).volumes[0]
  assert [os.path.basename(p) for p in spec.images] == [
      f'{name}-t1c.nii.gz', f'{name}-t1n.nii.gz', f'{name}-t2w.nii.gz', f'{name}-t2f.nii.gz']
  assert spec.label.endswith('-seg.nii.gz')


# ----------------------------------------------------------------------------------------------
# ACDC.


def test_acdc_frames_label_selection_and_centre_crop_without_padding(tmp_path):
  files = fx.write_acdc(str(tmp_path / 'acdc'), patients=('patient011', 'patient049',
                                                          'patient040'),
                        small=('patient040',))
  out = tmp_path / 'out'
  m = run_build(tmp_path / 'acdc', out, 'acdc')
  assert m.slice_shape is None  # patient040 is 150 x 120: the 128 crop keeps its 120 columns
  assert m.splits['train'].subjects == ['patient011']
  assert m.splits['test'].subjects == ['patient040', 'patient049']
  vols = sidecars(out)
  assert vols['patient040_frame01']['slice_shape'] == [128, 120, 1]
  got = by_subject(read_split(out, 'test'))
  for pid in ('patient040', 'patient049'):
    frames = [f'{pid}_frame01', f'{pid}_frame12']
    want_recs = []
    for frame in frames:  # each frame is its own volume, normalised on its own
      want = expected([image(files[frame]['image'])], label(files[frame]['label']),
                      select='label', crop=('centre', (128, 128)))
      assert want[0].tolist() == [1, 2, 3]
      n = len(want[0])
      check_records(got[pid][len(want_recs):len(want_recs) + n], want, subject=pid,
                    dataset='acdc', modalities=['cine_mr'],
                    affine=nib.load(files[frame]['image']).affine, spacing=(1.4, 1.4, 10.0))
      assert {r.volume for r in got[pid][len(want_recs):len(want_recs) + n]} == {frame}
      want_recs += [None] * n
      assert vols[frame]['first_record'] >= 0
    assert len(got[pid]) == len(want_recs)


def test_acdc_miassr_keeps_every_slice(tmp_path):
  fx.write_acdc(str(tmp_path / 'acdc'), patients=('patient011', 'patient049'), n_slices=4)
  m = run_build(tmp_path / 'acdc', tmp_path / 'out', 'acdc', '--protocol=miassr')
  assert m.splits['train'].num_records == 2 * 4  # two frames, all slices
  assert m.slice_shape == [128, 128, 1]


# ----------------------------------------------------------------------------------------------
# COVID-CT.


@pytest.mark.parametrize('masks', ['combined', 'separate'])
def test_covid_zenodo_layout_ids_masks_and_fallback_split(tmp_path, masks):
  cases = ('coronacases_001', 'coronacases_002', 'radiopaedia_4_85506_1')
  files = fx.write_covid_zenodo(str(tmp_path / 'covid'), cases=cases, masks=masks)
  out = tmp_path / 'out'
  m = run_build(tmp_path / 'covid', out, 'covid_ct')
  info = m.settings['split']
  assert info['fallback'] == 'random:0' and m.settings['layout'] == 'zenodo-20'
  subjects = sorted(s for sp in m.splits.values() for s in sp.subjects)
  assert set(subjects) == set(cases)
  assert len(m.splits['test'].subjects) == 1 and m.splits['val'].subjects == m.splits[
      'test'].subjects
  assert m.slice_shape == [512, 512, 1]
  for split in ('train', 'test'):
    for sid, got in by_subject(read_split(out, split)).items():
      want = expected([image(files[sid]['image'])], files[sid]['expected_label'],
                      select='label', crop=('centre', (512, 512)))
      assert want[0].tolist() == [1, 2]  # slice 0 has no mask
      check_records(got, want, subject=sid, dataset='covid_ct', modalities=['ct'],
                    affine=nib.load(files[sid]['image']).affine, spacing=(0.7, 0.7, 5.0))


def test_covid_challenge_layout_thesis_lists_and_miassr_margin(tmp_path):
  files = fx.write_covid_challenge(str(tmp_path / 'c20'), train=('volume-covid19-A-0070',),
                                   validation=('volume-covid19-A-0089', 'volume-covid19-A-0999'),
                                   validation_labels=False)
  out = tmp_path / 'out'
  m = run_build(tmp_path / 'c20', out, 'covid_ct', '--protocol=miassr')
  assert m.settings['layout'] == 'covid19-20' and m.settings['split']['rule'] == 'thesis'
  assert m.splits['train'].subjects == ['volume-covid19-A-0070']
  assert m.splits['val'].subjects == ['volume-covid19-A-0089']
  assert m.splits['test'].subjects == ['volume-covid19-A-0089']
  assert m.slice_shape == [332, 412, 1] and not m.has_labels  # Validation/ has no _seg
  got = by_subject(read_split(out, 'test'))['volume-covid19-A-0089']
  f = files['volume-covid19-A-0089']
  want = expected([image(f['image'])], None, select='all', crop=('margin', (90, 50)))
  check_records(got, want, subject='volume-covid19-A-0089', dataset='covid_ct',
                modalities=['ct'], affine=nib.load(f['image']).affine, spacing=(0.8, 0.8, 5.0))
  # RDST selects slices on the mask: a volume without one is bad input.
  with pytest.raises(InputError, match='volume-covid19-A-0089_ct.nii.gz.*no label file'):
    run_build(tmp_path / 'c20', tmp_path / 'out2', 'covid_ct')


# ----------------------------------------------------------------------------------------------
# Splits.


def _specs(ids, stratum=''):
  return [readers.VolumeSpec(subject=s, volume=s, images=(s,), stratum=stratum) for s in ids]


def test_thesis_lists_are_the_reference_lists():
  sizes = {'oasis': (30, 3, 9), 'brats': (50, 3, 10), 'acdc': (80, 8, 20),
           'covid_ct': (199, 7, 50)}
  for ds, lists in splits.THESIS.items():
    assert tuple(len(lists[s]) for s in ('train', 'val', 'test')) == sizes[ds]
    assert set(lists['val']) <= set(lists['test'])
    assert not set(lists['train']) & set(lists['test'])
  assert splits.THESIS['oasis']['test'][:4] == ('OAS1_0009_MR1', 'OAS1_0033_MR1',
                                                'OAS1_0023_MR1', 'OAS1_0004_MR1')
  assert 'volume-covid19-A-0196_0' in splits.THESIS['covid_ct']['train']
  assert splits.THESIS['acdc']['train'][0] == 'patient011'


def test_random_split_follows_the_reference_rules_and_is_seeded():
  rule = splits.parse_split('random:7')
  oasis = splits.make_splits('oasis', 'oasis1', _specs([f'OAS1_{i:04d}_MR1'
                                                        for i in range(1, 43)]), rule).subjects
  assert (len(oasis['train']), len(oasis['val']), len(oasis['test'])) == (37, 3, 5)
  assert set(oasis['val']) <= set(oasis['test']) and not set(oasis['train']) & set(oasis['test'])
  acdc = splits.make_splits('acdc', 'acdc', _specs([f'patient{i:03d}' for i in range(1, 101)]),
                            rule).subjects
  assert (len(acdc['train']), len(acdc['val']), len(acdc['test'])) == (80, 8, 20)
  brats = splits.make_splits('brats', 'graded', _specs([f'HGG_{i}' for i in range(210)], 'HGG') +
                             _specs([f'LGG_{i}' for i in range(75)], 'LGG'), rule).subjects
  assert (len(brats['train']), len(brats['val']), len(brats['test'])) == (40, 3, 10)
  assert sum(s.startswith('LGG') for s in brats['test']) == 3
  covid = splits.make_splits('covid_ct', 'covid19-20',
                             _specs([f'a{i}' for i in range(199)], 'Train') +
                             _specs([f'b{i}' for i in range(50)], 'Validation'), rule).subjects
  assert (len(covid['train']), len(covid['val']), len(covid['test'])) == (199, 7, 50)
  folder = splits.make_splits('folder', 'volumes', _specs([f's{i}' for i in range(10)]),
                              rule).subjects
  assert (len(folder['train']), len(folder['val']), len(folder['test'])) == (7, 1, 2)
  assert not set(folder['val']) & set(folder['test'])
  again = splits.make_splits('oasis', 'oasis1', _specs([f'OAS1_{i:04d}_MR1'
                                                        for i in range(1, 43)]), rule).subjects
  other = splits.make_splits('oasis', 'oasis1', _specs([f'OAS1_{i:04d}_MR1' for i in range(1, 43)]),
                             splits.parse_split('random:8')).subjects
  assert again == oasis and other != oasis
  tiny = splits.make_splits('folder', 'volumes', _specs(['only']), rule).subjects
  assert tiny == {'train': ['only'], 'val': [], 'test': []}


def test_split_file_and_bad_split_arguments(tmp_path):
  path = tmp_path / 'split.json'
  path.write_text(json.dumps({'train': ['a', 'b'], 'test': ['c'], 'val': ['c']}))
  res = splits.make_splits('folder', 'volumes', _specs(['a', 'b', 'c', 'd']),
                           splits.parse_split(f'file:{path}'))
  assert res.subjects == {'train': ['a', 'b'], 'val': ['c'], 'test': ['c']}
  assert res.info['rule'] == 'file' and res.info['unused_subjects'] == 1
  path.write_text(json.dumps({'train': ['a'], 'test': ['a']}))
  with pytest.raises(InputError, match='in train and in val/test'):
    splits.make_splits('folder', 'volumes', _specs(['a']), splits.parse_split(f'file:{path}'))
  for bad in ('random', 'random:x', 'file:', 'thesis2'):
    with pytest.raises(InputError, match='--split'):
      splits.parse_split(bad)


# ----------------------------------------------------------------------------------------------
# Determinism, resume, framing, CLI.

FIVE = ('OAS1_0101_MR1', 'OAS1_0102_MR1', 'OAS1_0103_MR1', 'OAS1_0104_MR1', 'OAS1_0105_MR1')
SHARDED = ('--split=random:1', '--shards=train=2,val=1,test=1')


def test_same_input_gives_byte_identical_output_for_any_workers(tmp_path):
  fx.write_oasis(str(tmp_path / 'oasis'), subjects=FIVE, n_slices=3)
  args = ['--dataset=oasis', f'--src={tmp_path / "oasis"}', '--quiet', *SHARDED]
  assert build.main(args + [f'--out={tmp_path / "a"}', '--workers=1']) == 0
  assert build.main(args + [f'--out={tmp_path / "b"}', '--workers=2']) == 0
  a, b = tree_bytes(tmp_path / 'a'), tree_bytes(tmp_path / 'b')
  assert len([n for n in a if n.endswith('.tfrecord')]) == 4
  assert a == b


def test_interrupted_build_resumes_to_the_same_bytes(tmp_path, monkeypatch):
  fx.write_oasis(str(tmp_path / 'oasis'), subjects=FIVE, n_slices=3)
  args = ['--dataset=oasis', f'--src={tmp_path / "oasis"}', '--quiet', '--workers=1', *SHARDED]
  assert build.main(args + [f'--out={tmp_path / "clean"}']) == 0
  out = tmp_path / 'out'

  def fail(name):
    raise KeyboardInterrupt(f'injected after {name}')

  monkeypatch.setattr(writer, '_after_shard_hook', fail)
  with pytest.raises(KeyboardInterrupt):
    build.main(args + [f'--out={out}'])
  m = manifest.read_manifest(str(out))
  assert not m.complete
  listed = [s.file for sp in m.splits.values() for s in sp.shards]
  assert listed == ['train-00000-of-00002.tfrecord']
  assert sorted(os.listdir(out)) == ['manifest.json', 'train-00000-of-00002.tfrecord',
                                     'train-00000-of-00002.tfrecord.index.npy',
                                     'train-00000-of-00002.tfrecord.volumes.json']
  # What a kill could leave behind: a temporary file and a complete but unlisted shard.
  (out / '.train-00001-of-00002.tfrecord.0123456789ab.tmp.tfrecord').write_bytes(b'partial')
  (out / 'train-00001-of-00002.tfrecord').write_bytes(b'not listed')
  monkeypatch.setattr(writer, '_after_shard_hook', None)
  first = (out / 'train-00000-of-00002.tfrecord').stat().st_mtime_ns
  assert build.main(args + [f'--out={out}']) == 0
  assert (out / 'train-00000-of-00002.tfrecord').stat().st_mtime_ns == first  # kept, not redone
  assert tree_bytes(out) == tree_bytes(tmp_path / 'clean')
  assert build.main(args + [f'--out={out}']) == 0  # complete: nothing to do
  assert tree_bytes(out) == tree_bytes(tmp_path / 'clean')
  shard = out / 'test-00000-of-00001.tfrecord'  # a listed shard damaged later is written again
  blob = bytearray(shard.read_bytes())
  blob[100] ^= 0xFF
  shard.write_bytes(bytes(blob))
  assert build.main(args + [f'--out={out}']) == 0
  assert tree_bytes(out) == tree_bytes(tmp_path / 'clean')

  with pytest.raises(InputError, match='other settings.*crop'):
    build.main(args + [f'--out={out}', '--protocol=miassr'])
  (tmp_path / 'junk').mkdir()
  (tmp_path / 'junk' / 'notes.txt').write_text('mine')
  with pytest.raises(InputError, match='not empty'):
    build.main(args + [f'--out={tmp_path / "junk"}'])


def _masked_crc(data):
  crc = google_crc32c.value(data)
  return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def test_tfrecord_framing_index_and_sha256_decoded_independently(tmp_path):
  fx.write_oasis(str(tmp_path / 'oasis'), subjects=('OAS1_0001_MR1', 'OAS1_0004_MR1'),
                 n_slices=3)
  out = tmp_path / 'out'
  m = run_build(tmp_path / 'oasis', out, 'oasis')
  for sp in m.splits.values():
    for shard in sp.shards:
      blob = (out / shard.file).read_bytes()
      assert hashlib.sha256(blob).hexdigest() == shard.sha256
      offsets, pos = [], 0
      while pos < len(blob):
        (length,) = struct.unpack('<Q', blob[pos:pos + 8])
        (length_crc,) = struct.unpack('<I', blob[pos + 8:pos + 12])
        data = blob[pos + 12:pos + 12 + length]
        (data_crc,) = struct.unpack('<I', blob[pos + 12 + length:pos + 16 + length])
        assert length_crc == _masked_crc(blob[pos:pos + 8]) and data_crc == _masked_crc(data)
        records.decode_slice(data)
        offsets.append(pos)
        pos += 16 + length
      assert pos == len(blob) and len(offsets) == shard.num_records
      index = np.load(out / shard.index)
      assert index.dtype == np.int64 and index.tolist() == offsets
      assert shard.index == shard.file + manifest.INDEX_SUFFIX


def test_cli_runs_as_a_module_with_progress_and_summary(tmp_path):
  fx.write_oasis(str(tmp_path / 'oasis'), subjects=('OAS1_0001_MR1', 'OAS1_0004_MR1'),
                 n_slices=2)
  proc = subprocess.run(
      [sys.executable, '-m', 'data_prep.build', '--dataset=oasis', f'--src={tmp_path / "oasis"}',
       f'--out={tmp_path / "out"}', '--workers=2'], cwd=REPO, capture_output=True, text=True,
      timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr
  assert 'volumes 2/2' in proc.stderr and 'slices/s' in proc.stderr
  assert 'done in' in proc.stderr and 'manifest.json' in proc.stderr
  assert manifest.read_manifest(str(tmp_path / 'out')).complete
  dry = subprocess.run(
      [sys.executable, '-m', 'data_prep.build', '--dataset=oasis', f'--src={tmp_path / "oasis"}',
       f'--out={tmp_path / "dry"}', '--dry_run'], cwd=REPO, capture_output=True, text=True,
      timeout=120, check=False)
  assert dry.returncode == 0 and 'train' in dry.stderr and not (tmp_path / 'dry').exists()
