"""experiments/mos.py: blinded MOS kit export, scoring-sheet un-blinding and the Table 3.5 table.

Run: .venv/bin/python -m pytest tests/test_mos.py
"""

import csv
import os

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from experiments import mos
from medsr_jax.errors import InputError
from medsr_jax.logging import panels

IDS = [f'brats_{i:04d}/s{i:03d}' for i in range(12)]
METHODS = ['SRResNet', 'SRGAN', 'MS-GAN']


def _fake_runs(tmp_path, channels=1):
  rng = np.random.default_rng(7)
  hr = rng.random((12, 8, 8, channels), dtype=np.float32)
  runs = []
  for k, method in enumerate(METHODS):
    run = tmp_path / f'run_{k}'
    ids, sr, gt = list(IDS), rng.random((12, 8, 8, channels), dtype=np.float32), hr
    if k == 1:  # an extra test id only this run has
      ids = ids + ['extra/s000']
      sr = np.concatenate([sr, sr[:1]])
      gt = np.concatenate([hr, hr[:1]])
    path = mos.write_predictions(run, method=method, ids=ids, sr=sr, hr=gt)
    assert path == os.path.join(str(run), 'predictions', 'test.npz')
    runs.append(str(run))
  return runs


def _read_csv(path):
  with open(path, newline='') as f:
    return list(csv.reader(f))


def _write_sheet(path, rows):
  with open(path, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['image_id', 'score', 'remarks'])
    w.writerows(rows)


def test_predictions_round_trip(tmp_path):
  runs = _fake_runs(tmp_path)
  p = mos.read_predictions(runs[1])
  assert p['method'] == 'SRGAN' and p['ids'].tolist() == IDS + ['extra/s000']
  assert p['sr'].shape == p['hr'].shape == (13, 8, 8, 1) and p['sr'].dtype == np.float32
  assert os.listdir(os.path.join(runs[1], 'predictions')) == ['test.npz']  # no temp left
  with pytest.raises(InputError, match='reserved'):
    mos.write_predictions(tmp_path / 'x', method='Ground Truth', ids=['a'],
                          sr=np.zeros((1, 2, 2)), hr=np.zeros((1, 2, 2)))
  with pytest.raises(InputError, match='2 ids for 1 images'):
    mos.write_predictions(tmp_path / 'x', method='m', ids=['a', 'b'],
                          sr=np.zeros((1, 2, 2)), hr=np.zeros((1, 2, 2)))
  with pytest.raises(InputError, match='no predictions'):
    mos.read_predictions(tmp_path)


def test_export_and_score(tmp_path):
  runs = _fake_runs(tmp_path)
  out = tmp_path / 'kit'
  summary = mos.export_kit(runs, out, samples=5, seed=3)
  assert summary['methods'] == METHODS and len(summary['sample_ids']) == 5
  assert set(summary['sample_ids']) <= set(IDS)  # the extra id is not in every run
  assert sorted(os.listdir(out)) == ['README.txt', 'images', 'key', 'sheet.csv']
  assert 'ONLY the folder images/ and the file sheet.csv' in (out / 'README.txt').read_text()
  pngs = sorted(os.listdir(out / 'images'))
  assert len(pngs) == 5 * 4

  sheet = _read_csv(out / 'sheet.csv')
  assert sheet[0] == ['image_id', 'score', 'remarks'] and len(sheet) == 21
  assert all(r[1:] == ['', ''] for r in sheet[1:])
  sheet_ids = [r[0] for r in sheet[1:]]
  assert sorted(f'{i}.png' for i in sheet_ids) == pngs
  text = (out / 'sheet.csv').read_text().lower()
  for word in [m.lower() for m in METHODS] + ['ground', 'truth', 'brats']:
    assert word not in text
  assert all(len(i) == 6 and int(i, 16) >= 0 for i in sheet_ids)

  key = _read_csv(out / 'key' / 'key.csv')
  assert key[0] == ['image_id', 'sample_id', 'method']
  key_rows = {r[0]: (r[1], r[2]) for r in key[1:]}
  assert set(key_rows) == set(sheet_ids)
  assert sorted(m for _, m in key_rows.values()) == sorted((METHODS + ['ground truth']) * 5)
  assert sheet_ids != [r[0] for r in key[1:]]  # shuffled

  preds = {mos.read_predictions(r)['method']: mos.read_predictions(r) for r in runs}
  for image_id, (sid, method) in key_rows.items():
    p = preds[METHODS[0]] if method == 'ground truth' else preds[method]
    i = p['ids'].tolist().index(sid)
    expected = panels.to_uint8((p['hr'] if method == 'ground truth' else p['sr'])[i, ..., 0])
    with Image.open(out / 'images' / f'{image_id}.png') as im:
      assert im.mode == 'L'
      np.testing.assert_array_equal(np.asarray(im), expected)

  # Same seed, same kit; non-empty out dir refused.
  again = mos.export_kit(runs, tmp_path / 'kit2', samples=5, seed=3)
  assert again['sample_ids'] == summary['sample_ids']
  assert _read_csv(tmp_path / 'kit2' / 'sheet.csv') == sheet
  with pytest.raises(InputError, match='not empty'):
    mos.export_kit(runs, out, samples=5, seed=3)

  # Fill the sheet: GT all 4, SRResNet all 1 with S, SRGAN 0..4 with remarks, MS-GAN mixed.
  mixed = iter([0, 1, 2, 3, 4])
  msgan = iter([3, 3, 4, 2, 4])
  rows, expect = [], {m: [] for m in METHODS + ['ground truth']}
  for image_id in sheet_ids:
    method = key_rows[image_id][1]
    score, remark = {'ground truth': (4, ''), 'SRResNet': (1, 's'),
                     'SRGAN': (None, 'A u, N'), 'MS-GAN': (None, 'N')}[method]
    if method == 'SRGAN':
      score = next(mixed)
    elif method == 'MS-GAN':
      score, remark = next(msgan), ('NN' if not expect['MS-GAN'] else '')
    expect[method].append(score)
    rows.append([image_id, str(score), remark])
  filled = tmp_path / 'filled.csv'
  _write_sheet(filled, rows)
  result = mos.score_sheet(filled, out / 'key' / 'key.csv')
  assert list(result) == METHODS + ['ground truth']
  gt = np.array(expect['ground truth'])
  for method, scores in expect.items():
    r = result[method]
    scores = np.array(scores)
    np.testing.assert_array_equal(np.sort(r['scores']), np.sort(scores))
    assert r['n'] == 5 and r['mean'] == pytest.approx(scores.mean())
    assert r['std'] == pytest.approx(scores.std(ddof=1))
    assert r['levels'] == {lv: int(np.sum(scores == lv)) for lv in range(5)}
    if method == 'ground truth':
      assert r['p_value'] is None
    else:
      assert r['p_value'] == stats.ranksums(r['scores'], gt).pvalue
  assert result['SRResNet']['remarks'] == {'S': 5, 'A': 0, 'U': 0, 'N': 0}
  assert result['SRGAN']['remarks'] == {'S': 0, 'A': 5, 'U': 5, 'N': 5}
  assert result['MS-GAN']['remarks'] == {'S': 0, 'A': 0, 'U': 0, 'N': 1}
  assert result['SRGAN']['mean'] == 2.0 and result['SRGAN']['levels'] == dict.fromkeys(range(5), 1)

  table = mos.markdown_table(result)
  lines = table.strip().splitlines()
  assert len(lines) == 2 + 4 and lines[-1].startswith('| ground truth |')
  assert '| SRGAN | 5 | 2.00 (1.581) | 1 | 1 | 1 | 1 | 1 | 0 | 5 | 5 | 5 |' in table
  assert lines[-1].endswith('| - |') and '4.00 (0.000)' in lines[-1]

  # CLI round trip of score, with --out.
  md = tmp_path / 'mos.md'
  assert mos.main(['score', f'--sheet={filled}', f'--key={out / "key" / "key.csv"}',
                   f'--out={md}']) == 0
  assert md.read_text() == table

  # Scoring errors name the row.
  def bad(row_index, score, remark, match):
    bad_rows = [list(r) for r in rows]
    bad_rows[row_index][1:] = [score, remark]
    _write_sheet(filled, bad_rows)
    with pytest.raises(InputError, match=match):
      mos.score_sheet(filled, out / 'key' / 'key.csv')

  bad(2, '5', '', r'row 4 .*score .5. is not an integer 0-4')
  bad(0, '3', 'SX', r"row 2 .*unknown remark 'X'")
  bad(1, '', 'S', r'row 3 .*missing score')
  _write_sheet(filled, rows + [['zzzzzz', '1', '']])
  with pytest.raises(InputError, match=r"row 22 \(image 'zzzzzz'\): image id not in the key"):
    mos.score_sheet(filled, out / 'key' / 'key.csv')
  _write_sheet(filled, rows[1:])
  with pytest.raises(InputError, match='not on the sheet'):
    mos.score_sheet(filled, out / 'key' / 'key.csv')


def test_export_first_channel_and_errors(tmp_path, capsys):
  runs = _fake_runs(tmp_path, channels=3)
  mos.export_kit(runs, tmp_path / 'kit', samples=2, seed=0)
  p = mos.read_predictions(runs[0])
  key = _read_csv(tmp_path / 'kit' / 'key' / 'key.csv')[1:]
  image_id, sid, method = next(r for r in key if r[2] == METHODS[0])
  with Image.open(tmp_path / 'kit' / 'images' / f'{image_id}.png') as im:
    np.testing.assert_array_equal(
        np.asarray(im), panels.to_uint8(p['sr'][p['ids'].tolist().index(sid), ..., 0]))

  with pytest.raises(InputError, match='only 12 test ids are in every run'):
    mos.export_kit(runs, tmp_path / 'kit3', samples=13)

  # A run whose ground truth differs.
  q = mos.read_predictions(runs[2])
  q['hr'][:, 0, 0, 0] += 0.5
  mos.write_predictions(runs[2], method=q['method'], ids=q['ids'], sr=q['sr'], hr=q['hr'])
  with pytest.raises(InputError, match=f'runs {runs[0]} and {runs[2]} have different ground'):
    mos.export_kit(runs, tmp_path / 'kit4', samples=3)
  assert not os.path.exists(tmp_path / 'kit4')
  assert not [n for n in os.listdir(tmp_path) if n.startswith('.')]  # no temp kit left

  # The CLI: one error line, exit code 2, nothing written.
  with pytest.raises(SystemExit) as e:
    mos.main(['export', f'--runs={",".join(runs)}', f'--out={tmp_path / "kit5"}', '--samples=3'])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith('error: runs ') and 'different ground truth' in err
  assert err.count('\n') == 1
  assert not os.path.exists(tmp_path / 'kit5')
  with pytest.raises(SystemExit) as e:
    mos.main(['export', f'--runs={runs[0]},{runs[1]}', f'--out={tmp_path / "kit"}',
              '--samples=2'])
  assert e.value.code == 2 and 'not empty' in capsys.readouterr().err
