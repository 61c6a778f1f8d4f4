"""Checks of experiments/report.py (Tables 3.3 / 3.5 and Figs 3.13 / 3.14 from chapter-3 runs).

Fake run directories (config.json as `medsr_jax.main` writes it, results.json as
`trainers/lesion_report.py` writes it, two test slices each) stand in for trained runs; no training.

  .venv/bin/python -m pytest -q tests/test_report.py
"""

import json
import pathlib

import numpy as np
import pytest

from experiments import report

SLICES = 2


def _entry(psnr: float, ssim: float) -> dict:
  """A region entry whose slices are mean -/+ 1 dB and -/+ 0.01 SSIM (mean, std 1 / 0.01)."""
  p = np.array([psnr - 1.0, psnr + 1.0])
  s = np.array([ssim - 0.01, ssim + 0.01])
  return {'psnr': p.tolist(), 'ssim': s.tolist(), 'psnr_mean': float(p.mean()),
          'psnr_std': float(p.std()), 'ssim_mean': float(s.mean()), 'ssim_std': float(s.std()),
          'slices': SLICES}


def _row(psnr: float, ssim: float) -> dict:
  return {'roi': _entry(psnr, ssim), 'slice': _entry(psnr - 5.0, ssim - 0.1)}


def _baselines(scale: float, sigma: float) -> dict:
  base = 20.0 + scale + sigma / 10
  return {'bicubic': _row(base + 0.5, 0.70), 'bilinear': _row(base, 0.65),
          'bilinear+nlm': _row(base + 1.0, 0.75)}


def write_run(directory: pathlib.Path, *, label: str, scale: float, sigma: float, psnr: float,
              ssim: float, name: str = 'srresnet', warmup: bool = False) -> pathlib.Path:
  directory.mkdir(parents=True)
  config = {'model': {'name': name, 'scale': scale, 'in_channels': 1, 'kwargs': {}},
            'data': {'kspace_sigma': float(sigma), 'roi': {'size': [120, 120], 'train': True}},
            'eval': {'method_label': label, 'num_panels': 3}, 'trainer': 'gan'}
  (directory / 'config.json').write_text(json.dumps(config, indent=2, sort_keys=True) + '\n')
  rows = _baselines(scale, sigma)
  if warmup:
    rows[f'{name} (warm-up)'] = _row(99.0, 0.99)
  rows[label or name] = _row(psnr, ssim)
  results = {**rows, 'ids': [f'brats_0001/s{i:03d}' for i in range(SLICES)],
             'roi_boxes': [[10, 10, 130, 130]] * SLICES}
  (directory / 'results.json').write_text(json.dumps(results, indent=1))
  return directory


def parse(markdown: str, thesis: bool = False) -> tuple[list, dict]:
  """(header cells, {row label: cells}) of the markdown table; without `thesis`, the columns
  beside ours ('... thesis', '... Δ') are left out."""
  lines = [line for line in markdown.splitlines() if line.startswith('|')]
  split = lambda line: [c.strip() for c in line.strip('|').split('|')]
  header = split(lines[0])
  keep = [i for i, h in enumerate(header)
          if thesis or not (h.endswith(' thesis') or h.endswith(' Δ'))]
  rows = {}
  for line in lines[2:]:
    cells = split(line)
    cells = [cells[i] for i in keep]
    rows[cells[0]] = cells[1:]
  return [header[i] for i in keep], rows


@pytest.fixture
def lfsr_tree(tmp_path):
  """The Table 3.3 grid (sweep point names) with gaps, an extra setting and non-runs."""
  grid = tmp_path / 'runs' / 'grid' / 'lfsr'
  psnr = {'LFSR': 32.0, 'SRGAN': 29.0, 'SRResNet': 35.0}
  done = {'LFSR': [(2, 0), (2, 20), (4, 0)], 'SRGAN': [(2, 0), (4, 0)], 'SRResNet': [(2, 0)]}
  for label, settings in done.items():
    for scale, sigma in settings:
      write_run(grid / f'method={label.lower()},scale={scale},sigma={sigma}', label=label,
                scale=float(scale), sigma=float(sigma), psnr=psnr[label] - scale - sigma / 20,
                ssim=0.9 - scale / 100, warmup=label != 'SRResNet')
  # deeper, an extra setting (x3) and a label outside the thesis rows
  write_run(tmp_path / 'runs' / 'extra' / 'deep' / 'edsr_x3', label='EDSR', scale=3.0, sigma=0.0,
            psnr=30.0, ssim=0.8)
  # a chapter-5 run (no ROI scores): skipped with a note
  other = tmp_path / 'runs' / 'grid' / 'rdst'
  other.mkdir(parents=True)
  (other / 'config.json').write_text(json.dumps({'model': {'name': 'rdst', 'scale': 4}}))
  (other / 'results.json').write_text(json.dumps({'rdst': {'psnr_mean': 30.0, 'ssim_mean': 0.9},
                                                  'ids': []}))
  # an export folder (config.json only) is not a run
  (grid / 'method=lfsr,scale=2,sigma=0' / 'export').mkdir()
  (grid / 'method=lfsr,scale=2,sigma=0' / 'export' / 'config.json').write_text('{}')
  return tmp_path / 'runs'


def test_table_3_3_layout_and_cells(lfsr_tree, capsys):
  runs = report.find_runs([lfsr_tree])
  assert 'rdst: results.json has no chapter-3 (ROI) scores; skipped' in capsys.readouterr().err
  assert len(runs) == 7
  assert {r.label for r in runs} == {'LFSR', 'SRGAN', 'SRResNet', 'EDSR'}
  lfsr = [r for r in runs if r.label == 'LFSR' and r.setting == (2.0, 20.0)][0]
  assert (lfsr.scale, lfsr.sigma) == (2.0, 20.0) and lfsr.directory.name.endswith('sigma=20')

  header, rows = parse(report.table_3_3(runs))
  assert header == ['Method', 'x2 PSNR', 'x2 SSIM', 'x2 (sigma=20) PSNR', 'x2 (sigma=20) SSIM',
                    'x4 PSNR', 'x4 SSIM', 'x3 PSNR', 'x3 SSIM']
  assert list(rows) == ['B+NLD', 'SRResNet', 'SRGAN', 'LFSR', 'EDSR', 'bilinear']
  assert rows['SRResNet'] == ['33.00 (1.00)', '0.880 (0.010)'] + ['-'] * 6
  assert rows['SRGAN'] == ['27.00 (1.00)', '0.880 (0.010)', '-', '-', '25.00 (1.00)',
                           '0.860 (0.010)', '-', '-']
  assert rows['LFSR'][:6] == ['30.00 (1.00)', '0.880 (0.010)', '29.00 (1.00)', '0.880 (0.010)',
                              '28.00 (1.00)', '0.860 (0.010)']
  assert rows['EDSR'] == ['-'] * 6 + ['30.00 (1.00)', '0.800 (0.010)']
  # B+NLD: the 'bilinear+nlm' row of each setting (base 20 + scale + sigma / 10, + 1)
  assert rows['B+NLD'] == ['23.00 (1.00)', '0.750 (0.010)', '25.00 (1.00)', '0.750 (0.010)',
                           '25.00 (1.00)', '0.750 (0.010)', '24.00 (1.00)', '0.750 (0.010)']
  assert rows['bilinear'][0] == '22.00 (1.00)'
  # warm-up rows are not reported
  assert not any('warm-up' in row for row in rows)
  # whole-slice region: every value 5 dB / 0.1 lower
  _, rows = parse(report.table_3_3(runs, region='slice'))
  assert rows['SRResNet'][:2] == ['28.00 (1.00)', '0.780 (0.010)']
  assert 'warning' not in capsys.readouterr().err


def test_baseline_disagreement_warns(tmp_path, capsys):
  a = write_run(tmp_path / 'a', label='LFSR', scale=2.0, sigma=0.0, psnr=30.0, ssim=0.9)
  write_run(tmp_path / 'b', label='SRGAN', scale=2.0, sigma=0.0, psnr=28.0, ssim=0.8)
  results = json.loads((tmp_path / 'b' / 'results.json').read_text())
  results['bilinear+nlm']['roi']['psnr'][0] += 1e-3
  (tmp_path / 'b' / 'results.json').write_text(json.dumps(results))
  runs = report.find_runs([tmp_path])
  _, rows = parse(report.table_3_3(runs))
  err = capsys.readouterr().err
  assert 'warning: B+NLD (bilinear+nlm) at x2, roi' in err and str(a) in err
  assert rows['B+NLD'][0] == '23.00 (1.00)'
  # within the tolerance: no warning
  results['bilinear+nlm']['roi']['psnr'][0] -= 1e-3 - 1e-9
  (tmp_path / 'b' / 'results.json').write_text(json.dumps(results))
  report.table_3_3(report.find_runs([tmp_path]))
  assert 'warning' not in capsys.readouterr().err


def test_table_3_5_order_and_digits(tmp_path):
  grid = tmp_path / 'grid' / 'msgan'
  write_run(grid / 'variant=msgan', label='MS-GAN', scale=4.0, sigma=0.0, psnr=26.7, ssim=0.789)
  write_run(grid / 'variant=wgan', label='WGAN', scale=4.0, sigma=0.0, psnr=27.2, ssim=0.806)
  write_run(grid / 'variant=gan_pretrain', label='GAN + pre-train', scale=4.0, sigma=0.0,
            psnr=25.2, ssim=0.715, warmup=True)
  # no eval.method_label: the model's row is the last non-baseline, non-warm-up row
  write_run(grid / 'variant=custom', label='', name='msgan_g', scale=4.0, sigma=0.0, psnr=20.0,
            ssim=0.5)
  runs = report.find_runs([str(tmp_path / 'grid')])
  header, rows = parse(report.table_3_5(runs))
  assert header == ['Method', 'x4 PSNR', 'x4 SSIM']
  assert list(rows) == ['GAN + pre-train', 'WGAN', 'MS-GAN', 'msgan_g']
  assert rows['GAN + pre-train'] == ['25.20 (1.00)', '0.7150 (0.0100)']
  assert rows['MS-GAN'] == ['26.70 (1.00)', '0.7890 (0.0100)']
  # two runs of one label and setting are an error
  write_run(tmp_path / 'grid' / 'again', label='WGAN', scale=4.0, sigma=0.0, psnr=1.0, ssim=0.1)
  with pytest.raises(report.InputError, match='two runs of WGAN at x4'):
    report.table_3_5(report.find_runs([tmp_path / 'grid']))


def test_cli_writes_table_and_plots(lfsr_tree, tmp_path, capsys):
  out, figs = tmp_path / 'table.md', tmp_path / 'figs'
  grid = lfsr_tree / 'grid'
  assert report.main([f'--runs={grid},{lfsr_tree / "extra"}', '--table=3.3', f'--out={out}',
                      f'--plots={figs}']) == 0
  printed = capsys.readouterr().out
  assert out.read_text() == printed and printed.startswith('Table 3.3')
  assert sorted(p.name for p in figs.iterdir()) == [
      'table3.3_roi_x2.png', 'table3.3_roi_x2_sigma20.png', 'table3.3_roi_x3.png',
      'table3.3_roi_x4.png']
  assert (figs / 'table3.3_roi_x2.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert not [p for p in tmp_path.iterdir() if p.name.endswith('.tmp')]


@pytest.mark.parametrize('args, message', [
    (['--runs={missing}', '--table=3.3'], 'is not a directory'),
    (['--runs={tree}', '--table=3.4'], '--table must be one of 3.3, 3.5, 4.1'),
    (['--runs={tree}', '--table=3.3', '--region=lesion'], '--region must be one of'),
    (['--runs={empty}', '--table=3.5'], 'no chapter-3 runs'),
])
def test_cli_errors(lfsr_tree, tmp_path, capsys, args, message):
  (tmp_path / 'empty').mkdir()
  values = dict(missing=tmp_path / 'nowhere', tree=lfsr_tree, empty=tmp_path / 'empty')
  with pytest.raises(SystemExit) as e:
    report.main([a.format(**values) for a in args] + [f'--out={tmp_path / "t.md"}'])
  assert e.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('error: ') and message in err[0]
  assert not (tmp_path / 't.md').exists()


def test_table_3_3_beside_the_thesis(lfsr_tree):
  text = report.table_3_3(report.find_runs([lfsr_tree]))
  header, rows = parse(text, thesis=True)
  assert header[1:4] == ['x2 PSNR', 'x2 PSNR thesis', 'x2 PSNR Δ']
  # LFSR x2: ours 30.00 (1.00) vs the thesis' 32.1; SSIM 0.880 vs 0.914
  assert rows['LFSR'][:6] == ['30.00 (1.00)', '32.1', '-2.10', '0.880 (0.010)', '0.914', '-0.034']
  assert rows['B+NLD'][:3] == ['23.00 (1.00)', '29.1', '-6.10']
  # the x3 setting is not in the thesis: no thesis columns; rows outside the thesis: empty cells
  assert 'x3 PSNR thesis' not in header and rows['EDSR'][1:3] == ['', '']
  assert rows['SRResNet'][header.index('x4 PSNR') - 1:header.index('x4 PSNR') + 2] == \
      ['-', '27.9', '']
  assert ('Missing (no run; nothing is invented): B+NLD at x4 (sigma=40); SRResNet at x2 '
          '(sigma=20); SRResNet at x4; '
          'SRResNet at x4 (sigma=40); SRGAN at x2 (sigma=20); SRGAN at x4 (sigma=40); LFSR at x4 '
          '(sigma=40).') in text


def test_table_3_5_thesis_std_and_illegible(tmp_path):
  write_run(tmp_path / 'msgan', label='MS-GAN', scale=4.0, sigma=0.0, psnr=26.7, ssim=0.789)
  text = report.table_3_5(report.find_runs([tmp_path]))
  _, rows = parse(text, thesis=True)
  assert rows['MS-GAN'] == ['26.70 (1.00)', '26.7 (1.97)', '+0.00', '0.7890 (0.0100)',
                            '0.789 (0.0554)', '+0.0000']
  assert 'Thesis notes:' in text and 'GAN + pre-train at x4' in text


def test_cli_all_includes_chapter_3(tmp_path, capsys):
  write_run(tmp_path / 'runs' / 'lfsr_x4', label='LFSR', scale=4.0, sigma=0.0, psnr=25.0,
            ssim=0.72)
  out = tmp_path / 'report'
  assert report.main([f'--runs={tmp_path / "runs"}', '--all', f'--out={out}']) == 0
  text = (out / 'report.md').read_text()
  assert capsys.readouterr().out == text
  assert '## Table 3.3\n\nTable 3.3: ' in text and '![table3.3_roi_x4](table3.3_roi_x4.png)' in text
  _, rows = parse(text[text.index('## Table 3.3'):], thesis=True)
  assert rows['LFSR'] == ['25.00 (1.00)', '25.1', '-0.10', '0.720 (0.010)', '0.723', '-0.003']
  assert sorted(p.name for p in out.iterdir()) == ['report.md', 'table3.3_roi_x4.png']
  assert '## Without runs\n\n3.5, 4.1, 4.2' in text
