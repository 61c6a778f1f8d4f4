"""Train / val / test splits: subject-wise (the thesis' lists, a seeded fallback, a JSON file) or,
for the chapter-3 protocol msgan, slice-level.

`--split=thesis` (default) uses the subject lists of the thesis experiments, verbatim from the
reference configs (spec Appendix A, §4.5): OASIS 30 / 3 / 9, BraTS 50 / 3 / 10, ACDC 80 / 8 / 20,
COVID-19-20 199 / 7 / 50. As in the thesis, **validation is a subset of test** in every list
(the val subjects are also test subjects; their slices are written to both splits). Subjects
of a list that are missing from --src are left out (and listed in the manifest's
settings.split.missing); found subjects in no list are not used (settings.split.unused_subjects
counts them). When no subject of the train list or none of the test list is found (other data,
the 20-case Zenodo COVID set, BraTS 2020 names, `folder`), the seeded fallback with seed 0 is
used instead and the manifest says so.

`--split=random:SEED` is the fallback: a seeded shuffle of the sorted subject ids
(`numpy.random.default_rng(SEED).permutation`), then the reference's rules (spec §4.5, MIASSR's
random splits, whose "validation" set is the one it evaluates on, so it is our test set):
  oasis     test = 5 subjects if 5 < n/5, else int(n/5); val = the first 3 of test
  acdc      test = 20 if 20 < n/5, else int(n/5);        val = the first 8 of test
  brats     HGG and LGG shuffled separately; 35 HGG + 15 LGG are used, test = 7 HGG + 3 LGG of
            them, val = the first 2 HGG + 1 LGG of test, train = the other 28 + 12 (fewer
            subjects: all are used and test = int(n/5) per grade); flat layouts (no grades):
            50 used, test 10, val 3
  covid_ct  COVID-19-20 layout: train = Train/, test = Validation/, val = 7 of Validation/
            (the thesis' sizes); the 20-case set: test = int(n/5) (4 of 20), val = 1 of test
  folder    disjoint splits: test = int(n/5), val = int(n/10), train = the rest
Every split with a rule-given size gets at least one subject when there are >= 2 subjects (a
disjoint val needs >= 3); train keeps the rest. A single subject is all train.

`--split=file:PATH` reads {"train": [...], "val": [...], "test": [...]} (subject ids).

`--split=slices:SEED[:VAL]` (protocol msgan, its default `slices:0`): thesis §3.3.1 splits the
N = 11,927 BraTS tumour slices *randomly at slice level* into 9,559 training and 2,368 test
slices, so slices of one subject are in both. Every selected slice gets a key, the first 8 bytes
(big-endian) of sha256('<SEED>/<subject>/<volume>/<slice index>'); the slices are ordered by
(key, volume, slice index) and the first round(N x 2368 / 11927) are test (exactly 2,368 of
11,927), the next round(VAL x the rest) are validation, the others train. The thesis has no
validation set: VAL defaults to 0.05 (5 % of the non-test slices, 478 of 9,559 for the thesis'
data), is carved from the training slices and is disjoint from test; `slices:SEED:0` keeps the
thesis' 9,559 training slices and an empty validation split. A slice's key depends only on the
seed and its own ids, so the split depends on the data, never on --workers or processing order.
With N >= 2, test gets at least one slice; with VAL > 0 and >= 2 non-test slices, so does val.

Tests: `.venv/bin/python -m pytest -q tests/test_data_prep.py -k split` and
`tests/test_data_prep_msgan.py` (slice-level).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Sequence

import numpy as np

from data_prep.readers import VolumeSpec
from medsr_jax.errors import InputError

SPLITS = ('train', 'val', 'test')
FALLBACK_SEED = 0
# Thesis §3.3.1 (BraTS 2018 T1ce tumour slices): 11,927 = 9,559 train + 2,368 test.
THESIS_SLICES = {'total': 11927, 'train': 9559, 'test': 2368}
SLICE_VAL_FRACTION = 0.05

# ---------------------------------------------------------------------------------------------
# Thesis lists (spec Appendix A, in the order of the reference configs). OASIS ids are
# 'OAS1_<n>_MR1', ACDC 'patient<n>', COVID 'volume-covid19-A-<n>'.

_OASIS_TRAIN = (  # 30
    '0028', '0016', '0021', '0012', '0011', '0035', '0017', '0039', '0040', '0038', '0027',
    '0001', '0034', '0042', '0007', '0006', '0018', '0013', '0026', '0002', '0020', '0025',
    '0022', '0037', '0031', '0005', '0041', '0015', '0014', '0030')

_OASIS_VAL = (  # 3
    '0009', '0033', '0023')

_OASIS_TEST = (  # 9
    '0009', '0033', '0023', '0004', '0019', '0032', '0029', '0010', '0003')

_BRATS_TRAIN = (  # 50
    'HGG_Brats17_CBICA_ABN_1', 'HGG_Brats17_TCIA_607_1', 'HGG_Brats17_TCIA_221_1',
    'HGG_Brats17_TCIA_162_1', 'HGG_Brats17_TCIA_203_1', 'HGG_Brats17_CBICA_ASW_1',
    'HGG_Brats17_TCIA_226_1', 'HGG_Brats17_CBICA_AQQ_1', 'HGG_Brats17_CBICA_AAP_1',
    'HGG_Brats17_2013_26_1', 'HGG_Brats17_TCIA_608_1', 'HGG_Brats17_CBICA_AQT_1',
    'HGG_Brats17_2013_20_1', 'HGG_Brats17_TCIA_149_1', 'HGG_Brats17_TCIA_168_1',
    'HGG_Brats17_CBICA_ABO_1', 'HGG_Brats17_2013_12_1', 'HGG_Brats17_CBICA_AME_1',
    'HGG_Brats17_TCIA_498_1', 'HGG_Brats17_TCIA_278_1', 'HGG_Brats17_TCIA_491_1',
    'HGG_Brats17_2013_25_1', 'HGG_Brats17_TCIA_412_1', 'HGG_Brats17_TCIA_401_1',
    'HGG_Brats17_TCIA_242_1', 'HGG_Brats17_CBICA_ALX_1', 'HGG_Brats17_TCIA_184_1',
    'HGG_Brats17_CBICA_AWH_1', 'HGG_Brats17_TCIA_257_1', 'HGG_Brats17_TCIA_603_1',
    'HGG_Brats17_TCIA_121_1', 'HGG_Brats17_TCIA_218_1', 'HGG_Brats17_TCIA_105_1',
    'HGG_Brats17_TCIA_479_1', 'HGG_Brats17_TCIA_396_1', 'LGG_Brats17_TCIA_202_1',
    'LGG_Brats17_TCIA_644_1', 'LGG_Brats17_TCIA_630_1', 'LGG_Brats17_2013_1_1',
    'LGG_Brats17_TCIA_402_1', 'LGG_Brats17_TCIA_266_1', 'LGG_Brats17_TCIA_312_1',
    'LGG_Brats17_2013_24_1', 'LGG_Brats17_TCIA_653_1', 'LGG_Brats17_TCIA_632_1',
    'LGG_Brats17_TCIA_299_1', 'LGG_Brats17_TCIA_282_1', 'LGG_Brats17_TCIA_640_1',
    'LGG_Brats17_2013_6_1', 'LGG_Brats17_TCIA_629_1')

_BRATS_VAL = (  # 3
    'HGG_Brats17_2013_5_1', 'HGG_Brats17_TCIA_198_1', 'LGG_Brats17_TCIA_310_1')

_BRATS_TEST = (  # 10
    'HGG_Brats17_2013_5_1', 'HGG_Brats17_TCIA_198_1', 'HGG_Brats17_TCIA_378_1',
    'HGG_Brats17_CBICA_ABE_1', 'HGG_Brats17_TCIA_296_1', 'HGG_Brats17_CBICA_ARF_1',
    'HGG_Brats17_TCIA_375_1', 'LGG_Brats17_TCIA_618_1', 'LGG_Brats17_TCIA_141_1',
    'LGG_Brats17_TCIA_310_1')

_ACDC_TRAIN = (  # 80
    '011', '014', '043', '009', '083', '001', '042', '019', '095', '094', '032', '100', '090',
    '093', '065', '080', '010', '073', '006', '061', '023', '028', '063', '031', '084', '091',
    '072', '060', '058', '003', '017', '059', '004', '078', '075', '071', '025', '021', '064',
    '074', '018', '008', '026', '029', '036', '013', '002', '034', '086', '055', '016', '089',
    '044', '088', '022', '050', '092', '081', '096', '039', '098', '067', '099', '007', '045',
    '077', '052', '051', '087', '066', '041', '069', '024', '057', '079', '037', '068', '053',
    '047', '038')

_ACDC_VAL = (  # 8
    '049', '015', '082', '035', '070', '056', '046', '062')

_ACDC_TEST = (  # 20
    '049', '015', '082', '035', '070', '056', '046', '062', '040', '012', '097', '030', '048',
    '027', '020', '076', '005', '085', '054', '033')

_COVID_TRAIN = (  # 199
    '0070', '0187', '0196_0', '0114', '0252', '0181', '0072', '0120', '0096', '0044', '0083',
    '0077', '0038', '0090', '0237', '0240', '0039', '0112', '0147', '0167_1', '0247', '0236',
    '0314', '0074_1', '0106', '0215', '0202_0', '0228', '0041', '0047_1', '0504', '0151',
    '0073', '0635', '0199', '0129', '0031', '0164', '0046', '0133', '0154', '0130', '0092',
    '0110', '0178', '0014', '0315', '0034', '0011', '0251', '0016', '0013', '0161', '0054',
    '0066', '0201', '0255', '0214', '0233', '0053', '0165', '0179', '0402', '0435', '0296',
    '0383_1', '0307', '0413', '0473', '0391', '0316', '0475', '0354', '0339', '0347', '0351',
    '0421', '0366', '0417', '0472', '0361', '0267', '0282', '0338', '0400', '0388', '0386',
    '0246', '0270', '0285', '0377', '0455', '0355', '0331', '0264', '0418', '0332', '0397',
    '0463', '0414', '0342', '0295', '0669', '0380', '0301', '0319', '0329', '0445', '0437',
    '0313', '0263', '0288', '0407', '0382', '0416', '0576', '0423', '0394', '0299', '0360',
    '0462', '0464', '0256_1', '0422', '0372', '0567', '0500', '0696', '0323', '0589', '0666',
    '0522', '0173', '0686', '0648', '0685', '0665', '0531', '0524', '0627', '0652', '0534',
    '0569', '0659', '0590', '0526', '0494', '0636', '0547', '0579', '0511', '0623', '0626',
    '0660', '0483', '0530', '0600', '0658', '0562', '0560', '0392', '0443', '0498', '0566',
    '0585', '0548', '0553', '0559', '0670', '0586', '0694', '0581', '0643', '0025', '0570',
    '0629', '0599', '0575', '0239', '0604', '0479', '0698', '0638', '0656', '0614', '0495',
    '0476', '0320', '0678', '0657', '0525', '0537', '0502', '0521', '0387', '0557', '0003',
    '0612', '0573')

_COVID_VAL = (  # 7
    '0089', '0189_0', '0170', '0143', '0091', '0033', '0026')

_COVID_TEST = (  # 50
    '0089', '0189_0', '0170', '0143', '0091', '0033', '0026', '0082', '0330', '0180_0', '0108',
    '0229', '0075', '0156', '0451', '0064', '0441', '0369_1', '0294', '0257', '0318_0', '0297',
    '0420', '0343', '0376', '0408', '0259', '0268', '0345', '0690', '0654', '0287_0', '0584',
    '0490', '0513', '0676', '0509', '0523', '0673', '0538', '0620', '0516', '0543', '0489',
    '0631', '0004', '0218', '0457', '0302', '0697')

THESIS: dict[str, dict[str, tuple[str, ...]]] = {
    'oasis': {'train': tuple(f'OAS1_{n}_MR1' for n in _OASIS_TRAIN),
              'val': tuple(f'OAS1_{n}_MR1' for n in _OASIS_VAL),
              'test': tuple(f'OAS1_{n}_MR1' for n in _OASIS_TEST)},
    'brats': {'train': _BRATS_TRAIN, 'val': _BRATS_VAL, 'test': _BRATS_TEST},
    'acdc': {'train': tuple(f'patient{n}' for n in _ACDC_TRAIN),
             'val': tuple(f'patient{n}' for n in _ACDC_VAL),
             'test': tuple(f'patient{n}' for n in _ACDC_TEST)},
    'covid_ct': {'train': tuple(f'volume-covid19-A-{n}' for n in _COVID_TRAIN),
                 'val': tuple(f'volume-covid19-A-{n}' for n in _COVID_VAL),
                 'test': tuple(f'volume-covid19-A-{n}' for n in _COVID_TEST)},
}


@dataclasses.dataclass(frozen=True)
class SplitRule:
  """A parsed --split: kind 'thesis', 'random' (with `seed`), 'file' (with `path`) or 'slices'
  (with `seed` and `val_fraction`)."""
  kind: str
  seed: int = FALLBACK_SEED
  path: str = ''
  val_fraction: float = 0.0


@dataclasses.dataclass
class SplitResult:
  """Sorted subject ids per split, and what the manifest records about how they were made."""
  subjects: dict[str, list[str]]
  info: dict[str, Any]


def parse_split(text: str) -> SplitRule:
  """'thesis' | 'random:SEED' | 'file:PATH' -> SplitRule (InputError otherwise)."""
  if text == 'thesis':
    return SplitRule('thesis')
  if text.startswith('random:'):
    seed = text[len('random:'):]
    if not seed.isdigit():
      raise InputError(f'--split=random:SEED needs a non-negative integer seed, got {seed!r}')
    return SplitRule('random', seed=int(seed))
  if text.startswith('file:') and len(text) > len('file:'):
    return SplitRule('file', path=os.path.abspath(text[len('file:'):]))
  if text.startswith('slices:'):
    seed, _, val = text[len('slices:'):].partition(':')
    if not seed.isdigit():
      raise InputError(f'--split=slices:SEED[:VAL] needs a non-negative integer seed, got {seed!r}')
    fraction = SLICE_VAL_FRACTION
    if val:
      try:
        fraction = float(val)
      except ValueError:
        fraction = -1.0
      if not 0.0 <= fraction < 1.0:
        raise InputError(f'--split=slices:SEED:VAL needs 0 <= VAL < 1 (the validation fraction '
                         f'of the non-test slices), got {val!r}')
    return SplitRule('slices', seed=int(seed), val_fraction=fraction)
  raise InputError(f'--split must be thesis, random:SEED, file:PATH or slices:SEED[:VAL], got '
                   f'{text!r}')


def _subjects(volumes: Sequence[VolumeSpec]) -> dict[str, str]:
  """{subject: stratum}, sorted by subject."""
  out: dict[str, str] = {}
  for v in sorted(volumes, key=lambda v: v.subject):
    out.setdefault(v.subject, v.stratum)
  return out


def _at_least(count: int, n: int, minimum_n: int = 2) -> int:
  return max(count, 1) if n >= minimum_n else count


def _quota(n: int, quota: int) -> int:
  """The reference's test-set size: `quota if quota < n / 5 else int(n / 5)` (>= 1 if n >= 2)."""
  return _at_least(quota if quota < n / 5 else int(n / 5), n)


def _shuffled(ids: Sequence[str], rng: np.random.Generator) -> list[str]:
  ids = sorted(ids)
  return [ids[i] for i in rng.permutation(len(ids))]


def _nested(ids: list[str], n_test: int, n_val: int) -> dict[str, list[str]]:
  """test = the first n_test, val = the first n_val of test, train = the rest."""
  test = ids[:n_test]
  return {'train': ids[n_test:], 'val': test[:min(n_val, n_test)], 'test': test}


def _merge(parts: Sequence[dict[str, list[str]]]) -> dict[str, list[str]]:
  return {s: sorted(x for p in parts for x in p[s]) for s in SPLITS}


def random_split(dataset: str, layout: str, subjects: dict[str, str],
                 seed: int) -> dict[str, list[str]]:
  """The seeded fallback split (rules in the module docstring)."""
  rng = np.random.default_rng(seed)
  ids = list(subjects)
  n = len(ids)
  if dataset == 'oasis':
    return _merge([_nested(_shuffled(ids, rng), _quota(n, 5), 3)])
  if dataset == 'acdc':
    return _merge([_nested(_shuffled(ids, rng), _quota(n, 20), 8)])
  if dataset == 'brats':
    strata = sorted(set(subjects.values()))
    quotas = {'HGG': (35, 7, 2), 'LGG': (15, 3, 1), '': (50, 10, 3)}
    parts = []
    for stratum in strata:
      members = _shuffled([s for s in ids if subjects[s] == stratum], rng)
      used, n_test, n_val = quotas.get(stratum, quotas[''])
      if len(members) < used:
        n_test = _at_least(int(len(members) / 5), len(members))
      parts.append(_nested(members[:used], n_test, n_val))
    return _merge(parts)
  if dataset == 'covid_ct' and layout == 'covid19-20':
    train = [s for s in ids if subjects[s] == 'Train']
    held = _shuffled([s for s in ids if subjects[s] != 'Train'], rng)
    if train and held:
      return _merge([{'train': train, 'val': held[:7], 'test': held}])
  if dataset == 'covid_ct':
    return _merge([_nested(_shuffled(ids, rng), _at_least(int(n / 5), n), 1)])
  # folder: disjoint val and test.
  order = _shuffled(ids, rng)
  n_test = _at_least(int(n / 5), n)
  n_val = _at_least(int(n / 10), n, minimum_n=3)
  return _merge([{'test': order[:n_test], 'val': order[n_test:n_test + n_val],
                  'train': order[n_test + n_val:]}])


def _read_file(path: str) -> tuple[dict[str, list[str]], str]:
  try:
    with open(path, 'rb') as f:
      raw = f.read()
    lists = json.loads(raw.decode('utf-8'))
  except (OSError, ValueError) as e:
    raise InputError(f'{path}: cannot read the split file ({" ".join(str(e).split())})') from e
  if not isinstance(lists, dict) or not set(lists) <= set(SPLITS) or not all(
      isinstance(v, list) and all(isinstance(x, str) for x in v) for v in lists.values()):
    raise InputError(f'{path}: a split file must be {{"train": [...], "val": [...], "test": '
                     '[...]}} with subject ids')
  return {s: list(lists.get(s, [])) for s in SPLITS}, hashlib.sha256(raw).hexdigest()


def make_splits(dataset: str, layout: str, volumes: Sequence[VolumeSpec],
                rule: SplitRule) -> SplitResult:
  """Subject ids per split for the discovered `volumes` under `rule`."""
  subjects = _subjects(volumes)
  if rule.kind == 'random':
    return SplitResult(random_split(dataset, layout, subjects, rule.seed),
                       {'rule': 'random', 'seed': rule.seed})
  if rule.kind == 'file':
    lists, digest = _read_file(rule.path)
    leak = sorted(set(lists['train']) & (set(lists['val']) | set(lists['test'])))
    if leak:
      raise InputError(f'{rule.path}: subjects in train and in val/test: {", ".join(leak[:5])}')
    info = {'rule': 'file', 'path': rule.path, 'sha256': digest}
  else:
    lists = {s: list(v) for s, v in THESIS.get(dataset, {}).items()}
    info = {'rule': 'thesis'}
    if dataset == 'covid_ct' and layout != 'covid19-20':
      lists = {}
  found = {s: [x for x in lists.get(s, []) if x in subjects] for s in SPLITS}
  if rule.kind == 'thesis' and not (found['train'] and found['test']):
    out = random_split(dataset, layout, subjects, FALLBACK_SEED)
    reason = ('the thesis has no subject lists for this data' if not lists else
              'no subject of the thesis train or test list was found')
    return SplitResult(out, {'rule': 'thesis', 'fallback': f'random:{FALLBACK_SEED}',
                             'reason': reason})
  missing = sorted({x for s in SPLITS for x in lists.get(s, []) if x not in subjects})
  listed = {x for s in SPLITS for x in lists.get(s, [])}
  info.update({'missing': missing, 'unused_subjects': len(set(subjects) - listed)})
  return SplitResult({s: sorted(found[s]) for s in SPLITS}, info)


# ---------------------------------------------------------------------------------------------
# Slice-level split (protocol msgan).


def slice_key(seed: int, subject: str, volume: str, index: int) -> int:
  """The slice's sort key: sha256('<seed>/<subject>/<volume>/<index>'), first 8 bytes."""
  digest = hashlib.sha256(f'{seed}/{subject}/{volume}/{int(index)}'.encode('utf-8')).digest()
  return int.from_bytes(digest[:8], 'big')


def slice_counts(n: int, val_fraction: float) -> tuple[int, int]:
  """(n_test, n_val) of `n` slices: the thesis' test proportion, then VAL of the rest."""
  total, test = THESIS_SLICES['total'], THESIS_SLICES['test']
  n_test = (2 * n * test + total) // (2 * total)  # round(n * 2368 / 11927), halves up
  n_test = _at_least(n_test, n)
  rest = n - n_test
  n_val = int(rest * val_fraction + 0.5)
  if val_fraction > 0:
    n_val = min(_at_least(n_val, rest), max(rest - 1, 0))
  return n_test, n_val


def slice_split(rule: SplitRule, selected: Sequence[tuple[str, str, Sequence[int]]]
                ) -> tuple[dict[str, dict[str, list[int]]], dict[str, Any]]:
  """Slice-level split (module docstring) of the selected slices of every volume.

  Args:
    rule: a 'slices' rule (seed, val_fraction).
    selected: (subject, volume, selected slice indices) per volume.

  Returns:
    ({split: {volume: sorted slice indices}} (volumes without a slice in a split are absent),
     the manifest's description of the split with its slice counts).
  """
  keyed = sorted((slice_key(rule.seed, subject, volume, k), volume, int(k))
                 for subject, volume, indices in selected for k in indices)
  n_test, n_val = slice_counts(len(keyed), rule.val_fraction)
  out: dict[str, dict[str, list[int]]] = {s: {} for s in SPLITS}
  for i, (_, volume, k) in enumerate(keyed):
    split = 'test' if i < n_test else 'val' if i < n_test + n_val else 'train'
    out[split].setdefault(volume, []).append(k)
  for per_volume in out.values():
    for indices in per_volume.values():
      indices.sort()
  info = {'rule': 'slices', 'seed': rule.seed, 'level': 'slice',
          'test_fraction': f'{THESIS_SLICES["test"]}/{THESIS_SLICES["total"]}',
          'val_fraction': rule.val_fraction, 'val_of': 'the non-test slices',
          'key': 'sha256("<seed>/<subject>/<volume>/<slice index>")[:8]',
          'slices': {s: sum(len(v) for v in out[s].values()) for s in SPLITS}}
  return out, info
