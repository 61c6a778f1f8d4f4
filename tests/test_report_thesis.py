"""Checks of the chapter-4/5 reports (experiments/report.py, report_tables.py, report_specs.py,
report_figures.py) and of experiments/thesis_numbers.json.

Fake run directories stand in for trained runs (no training): config.json is the real resolved
config of a configs/*.py grid point (`config_checks.resolved_json`), results.json follows the
trainers' schemas (`trainers/arbitrary_scale.py`: 'bicubic' / 'model' means over scales and
'per_scale' entries; `evaluate.write_report` + `trainers/segmentation_report.py`: 'bicubic' /
'model' entries and the 'dice' section), with known numbers.

  .venv/bin/python -m pytest -q tests/test_report_thesis.py
"""

import json
import math
import pathlib

import pytest

from experiments import report, report_runs, report_specs, report_tables

SCALES = (1.5, 2.0, 4.0)
THESIS = report_tables.load_thesis()


@pytest.fixture(scope='module')
def configs():
  """{(config file, arg): resolved config dict}, built once."""
  from medsr_jax import config_checks, config_lib  # pylint: disable=import-outside-toplevel
  cache = {}

  def get(path, arg=None):
    key = (path, arg)
    if key not in cache:
      module = config_lib.load_module(path)
      cache[key] = config_checks.resolved_json(module.get_config(arg))
    return json.loads(json.dumps(cache[key]))
  return get


def _entry(psnr, ssim, fid=None, std=1.0):
  entry = {'psnr': [psnr - std, psnr + std], 'ssim': [ssim - 0.01, ssim + 0.01],
           'psnr_mean': psnr, 'psnr_std': std, 'ssim_mean': ssim, 'ssim_std': 0.01,
           'slices': 2, 'per_subject': {}}
  if fid is not None:
    entry['fid'] = fid
  return entry


def write_run(directory: pathlib.Path, config: dict, results: dict, params: int = 0):
  directory.mkdir(parents=True)
  (directory / 'config.json').write_text(json.dumps(config, indent=2, sort_keys=True) + '\n')
  (directory / 'results.json').write_text(json.dumps(results, indent=1))
  if params:
    (directory / 'export').mkdir()
    (directory / 'export' / 'config.json').write_text(json.dumps(
        {'format': 'medsr_jax.export', 'model': config['model']['name'], 'param_count': params}))
  return directory


def scale_results(psnr: float, ssim: float, fid=None, bicubic=30.0, slope=1.0) -> dict:
  """An arbitrary-scale results.json whose model PSNR at the scales averages to `psnr`."""
  offsets = [slope * (2.0 - s) for s in SCALES]
  mean_offset = sum(offsets) / len(offsets)
  per_scale = {f'{s:g}': {'scale': s, 'bicubic': _entry(bicubic + o - mean_offset, 0.85),
                          'model': _entry(psnr + o - mean_offset, ssim, fid)}
               for s, o in zip(SCALES, offsets)}
  return {'bicubic': {'psnr_mean': bicubic}, 'model': {'psnr_mean': psnr},
          'scales': list(SCALES), 'per_scale': per_scale}


def _dice_entry(mean, std=0.01):
  return {'per_slice': [mean - std, mean + std], 'mean': mean, 'std': std, 'slices': 2,
          'absent': 0, 'per_subject': {}}


def fixed_results(model_name, psnr, ssim, dice_t, dataset='oasis', fid=None, hr=0.95,
                  bicubic=(29.0, 0.85, 0.80), per_channel=None):
  regions = {'oasis': ('T', 'GM', 'WM', 'CSF'), 'brats': ('WT', 'ET', 'TC'),
             'acdc': ('T', 'LV', 'RV', 'MC'), 'covid_ct': ('T', 'LL', 'RL', 'lesion')}[dataset]

  def dice_row(value):
    return {'vs_gt': {r: _dice_entry(value - 0.01 * i) for i, r in enumerate(regions)},
            'vs_hr': {}, 'mfd': {'value': None}}
  model = _entry(psnr, ssim, fid)
  if per_channel:
    model['per_channel'] = {c: _entry(v, ssim) for c, v in per_channel.items()}
  return {'bicubic': _entry(bicubic[0], bicubic[1]), 'model': model, 'slice_index': [0, 1],
          'dice': {'dataset': dataset, 'results': {'HR': dice_row(hr),
                                                   'bicubic': dice_row(bicubic[2]),
                                                   model_name: dice_row(dice_t)}}}


def parse(markdown: str, first_table_only: bool = True) -> tuple[list, dict]:
  """(header, {row: cells}) of the first markdown table in `markdown`."""
  lines, started = [], False
  for line in markdown.splitlines():
    if line.startswith('|'):
      lines.append(line)
      started = True
    elif started and first_table_only:
      break
  split = lambda line: [c.strip() for c in line.strip('|').split('|')]
  header = split(lines[0])
  return header, {split(line)[0]: dict(zip(header[1:], split(line)[1:])) for line in lines[2:]}


# ------------------------------------------------------------------------------------------------
# thesis_numbers.json


def test_thesis_numbers_load_and_rows_match_the_specs():
  assert set(THESIS.tables) == {'3.3', '3.5'} | set(report_specs.TABLES)
  for name, spec in report_specs.TABLES.items():
    table = THESIS.table(name)
    assert [r.label for r in spec.rows if r.thesis] == list(table['rows']), name
    keys = {report_tables.thesis_key(m, c) for part in spec.parts for c in part.columns
            for m in part.metrics if m.thesis}
    assert keys == set(table['metrics']), name
  for name, spec in report.TABLES.items():   # chapter 3
    rows = THESIS.table(name)['rows']
    assert [label for label, _ in spec.baselines_first] + list(spec.methods) == \
        [r for r in rows if r != 'Ground Truth']
  # spot checks against the dissertation's text
  assert THESIS.cell('4.3', 'w=64', 'psnr') == (True, 36.46, None)
  assert THESIS.cell('5.1', 'RDST', 'dice_t') == (True, 0.8889, 0.0097)
  assert THESIS.cell('3.3', 'LFSR', 'psnr_x2_sigma20') == (True, 29.0, None)
  assert THESIS.cell('5.10', 'ACDC', 'dice_t_unet_acdc') == (True, 0.8691, 0.025)
  assert THESIS.cell('4.1', 'SRGAN', 'psnr') == (True, None, None)
  assert 'Fig. 4.4' in THESIS.note('4.1', 'SRGAN|psnr')
  assert THESIS.cell('5.1', 'HR', 'psnr')[0] is False


def test_thesis_loader_rejects_a_null_without_note(tmp_path):
  bad = {'tables': {'9.9': {'caption': 'x', 'metrics': {'psnr': 'PSNR'},
                            'rows': {'A': {'psnr': None}}, 'notes': {}}}}
  (tmp_path / 't.json').write_text(json.dumps(bad))
  with pytest.raises(report.InputError, match='null without a note "A|psnr"'):
    report_tables.load_thesis(tmp_path / 't.json')
  bad['tables']['9.9']['rows']['A'] = {'ssim': 1.0}
  (tmp_path / 't2.json').write_text(json.dumps(bad))
  with pytest.raises(report.InputError, match="unknown metric 'ssim'"):
    report_tables.load_thesis(tmp_path / 't2.json')


# ------------------------------------------------------------------------------------------------
# chapter 4


@pytest.fixture
def miassr_grid(tmp_path, configs):
  grid = tmp_path / 'runs' / 'grid' / 'miassr'
  c = configs('configs/miassr.py', 'stage=full')
  write_run(grid / 'stage=full', c, scale_results(36.50, 0.9580, fid=40.00), params=1_500_000)
  write_run(grid / 'w=4', configs('configs/miassr.py', 'w=4'),
            scale_results(34.00, 0.9300, fid=90.00), params=16_000)
  demo = configs('configs/miassr.py', 'w=8,b=4')     # not the thesis' b = 16: flagged
  write_run(grid / 'w=8,b=4', demo, scale_results(34.90, 0.9400), params=30_000)
  branch = configs('configs/miassr.py', 'stage=gan')
  write_run(grid / 'stage=gan', branch, scale_results(36.40, 0.9570, fid=41.00))
  write_run(grid / 'stage=gan,eta=inf', configs('configs/miassr.py', 'stage=gan,eta=inf'),
            scale_results(35.00, 0.9500, fid=50.00))
  write_run(grid / 'stage=gan,gan=ragan', configs('configs/miassr.py', 'stage=gan,gan=ragan'),
            scale_results(36.00, 0.9550, fid=45.00))
  write_run(grid / 'stage=warmup,model=meta_rdn',
            configs('configs/miassr.py', 'stage=warmup,model=meta_rdn'),
            scale_results(36.80, 0.9620), params=5_800_000)
  return tmp_path / 'runs'


def test_table_4_3_ours_thesis_and_difference(miassr_grid):
  records = report_runs.find_records([miassr_grid])
  text = report.table_markdown('4.3', records)
  header, rows = parse(text)
  assert header[:5] == ['w', 'PSNR', 'PSNR thesis', 'PSNR Δ', 'SSIM']
  assert list(rows) == ['w=4', 'w=8', 'w=16', 'w=32', 'w=64', 'w=128']
  w64 = rows['w=64']
  assert (w64['PSNR'], w64['PSNR thesis'], w64['PSNR Δ']) == ('36.50', '36.46', '+0.04')
  assert (w64['SSIM'], w64['SSIM thesis'], w64['SSIM Δ']) == ('0.9580', '0.9576', '+0.0004')
  assert (w64['FID'], w64['FID thesis'], w64['FID Δ']) == ('40.00', '39.85', '+0.15')
  assert (w64['Params (M)'], w64['Params (M) thesis'], w64['Params (M) Δ']) == \
      ('1.500', '1.5', '+0.000')
  assert (rows['w=4']['PSNR'], rows['w=4']['PSNR Δ']) == ('34.00', '-0.58')
  # the flagged run without FID: '-' and no difference; a missing row: '-' and the thesis number
  assert (rows['w=8']['PSNR'], rows['w=8']['FID'], rows['w=8']['FID Δ']) == ('34.90', '-', '')
  assert (rows['w=16']['PSNR'], rows['w=16']['PSNR thesis'], rows['w=16']['PSNR Δ']) == \
      ('-', '35.22', '')
  assert 'w=8: ' in text and 'b=4 (thesis 16)' in text
  assert 'Missing (no run matches; nothing is invented): w=16 (configs/miassr.py:w=16); ' \
      'w=32 (configs/miassr.py:w=32); w=128 (configs/miassr.py:w=128).' in text
  # the w=64 cell is the full run, not the loss-ablation branch (which differs in 'stages')
  assert f'- w=64: {miassr_grid / "grid" / "miassr" / "stage=full"}\n' in text


def test_table_4_5_prefers_the_branch_and_reads_inf(miassr_grid):
  records = report_runs.find_records([miassr_grid])
  _, rows = parse(report.table_markdown('4.5', records))
  assert rows['eta=0.006']['PSNR'] == '36.40'          # the stage=gan branch
  assert (rows['eta=inf']['PSNR'], rows['eta=inf']['PSNR thesis'],
          rows['eta=inf']['PSNR Δ']) == ('35.00', '34.94', '+0.06')
  assert rows['eta=0']['PSNR'] == '-'
  # the loss weights are hard: the VGG-only run (gamma = 0 there) is not Table 4.6's gamma = 0
  _, rows = parse(report.table_markdown('4.6', records))
  assert rows['gamma=0']['PSNR'] == '-' and rows['gamma=0.001']['PSNR'] == '36.40'
  # Table 4.1: MIASSR and MetaRDN; the bicubic row from a run; params from export/config.json
  text = report.table_markdown('4.1', records)
  _, rows = parse(text)
  assert rows['MetaRDN']['PSNR'] == '36.80' and rows['MetaRDN']['Params (M)'] == '5.800'
  assert rows['Bicubic']['PSNR'] == '30.00' and rows['Bicubic']['PSNR Δ'] == '-1.32'
  assert rows['Bicubic']['Params (M)'] == ''
  assert rows['SRGAN']['PSNR thesis'] == '?' and 'not legible in the text: SRGAN, psnr' in text


def test_cli_table_and_figure(miassr_grid, tmp_path, capsys):
  out, figs = tmp_path / 't.md', tmp_path / 'figs'
  assert report.main([f'--runs={miassr_grid}', '--table=4.3', f'--out={out}',
                      f'--plots={figs}']) == 0
  printed = capsys.readouterr().out
  assert out.read_text() == printed and printed.startswith('## Table 4.3:')
  assert not figs.exists()                  # Table 4.3 has no figure
  assert report.main([f'--runs={miassr_grid}', '--figure=4.10', f'--plots={figs}']) == 0
  printed = capsys.readouterr().out
  assert printed.startswith('## Figure 4.10 (ours)') and '| RaGAN | 36.00 |' in printed
  assert sorted(p.name for p in figs.iterdir()) == ['fig4.10.png']
  assert (figs / 'fig4.10.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


# ------------------------------------------------------------------------------------------------
# chapter 5


@pytest.fixture
def rdst_grid(tmp_path, configs):
  grid = tmp_path / 'runs'
  c = configs('configs/rdst_e.py', 'stage=finetune,loss=e1')
  write_run(grid / 'rdst_e' / 'stage=finetune,loss=e1', c,
            fixed_results('rdst_e', 33.30, 0.9295, 0.8880, fid=80.0), params=2_350_000)
  write_run(grid / 'rdst_e' / 'stage=l1', configs('configs/rdst_e.py', 'stage=l1'),
            fixed_results('rdst_e', 33.00, 0.9270, 0.8860))
  write_run(grid / 'rdst_e' / 'stage=finetune,loss=hrl',
            configs('configs/rdst_e.py', 'stage=finetune,loss=hrl'),
            fixed_results('rdst_e', 32.70, 0.9220, 0.8900))
  write_run(grid / 'baselines' / 'model=rcan', configs('configs/baseline.py', 'model=rcan'),
            fixed_results('rcan', 32.90, 0.9230, 0.8830))
  # an ACDC run of RDST-E (eval.dataset) and a BraTS one with per-modality scores
  acdc = configs('configs/rdst_e.py', 'stage=finetune,loss=e1')
  acdc['eval']['dataset'] = 'acdc'
  write_run(grid / 'acdc' / 'rdst_e_e1', acdc,
            fixed_results('rdst_e', 27.20, 0.7900, 0.8700, dataset='acdc'))
  brats = configs('configs/rdst_e.py', 'stage=finetune,loss=e1')
  brats['eval']['dataset'] = 'brats'
  write_run(grid / 'brats' / 'rdst_e_e1', brats, fixed_results(
      'rdst_e', 33.00, 0.9200, 0.7830, dataset='brats',
      per_channel={'t1ce': 33.40, 't1': 33.10, 't2': 31.70, 'flair': 32.60}))
  return grid


def test_table_5_1_dice_thesis_and_missing(rdst_grid):
  records = report_runs.find_records([rdst_grid])
  text = report.table_markdown('5.1', records)
  _, rows = parse(text)
  e = rows['RDST-E']
  assert (e['PSNR'], e['PSNR thesis'], e['PSNR Δ']) == ('33.30 (1.00)', '33.26 (3.4)', '+0.04')
  assert (e['Dice-T'], e['Dice-T thesis'], e['Dice-T Δ']) == \
      ('0.8880 (0.0100)', '0.8871 (0.0096)', '+0.0009')
  assert (e['Dice-G'], e['Dice-G thesis']) == ('0.8780 (0.0100)', '0.8446 (0.057)')
  assert e['Params (M)'] == '2.35' and e['MACs (G)'] == '-' and e['MACs (G) thesis'] == '3.53'
  # HR: Dice only; bicubic: the first run's bicubic entry
  assert rows['HR']['PSNR'] == '' and rows['HR']['Dice-T'] == '0.9500 (0.0100)'
  assert rows['HR']['Dice-T thesis'] == '0.952 (0.012)' and rows['HR']['Dice-T Δ'] == '-0.0020'
  assert rows['Bicubic']['PSNR'] == '29.00 (1.00)' and rows['Bicubic']['PSNR Δ'] == '-0.88'
  # RCAN from configs/baseline.py (120k L1 steps: flagged), RDST / EDSR / ... missing
  assert rows['RCAN']['PSNR'] == '32.90 (1.00)'
  assert 'RCAN: ' in text and 'stages=l1+l1 (thesis l1)' in text
  assert 'dataset=sample (thesis oasis)' in text
  assert rows['RDST']['PSNR'] == '-' and rows['RDST']['PSNR thesis'] == '33.42 (3.7)'
  assert 'Missing (no run matches; nothing is invented): EDSR (configs/baseline.py:model=' \
      'edsr); RDN' in text
  # the ACDC and BraTS runs go to their own tables, per-modality columns from per_channel
  _, rows = parse(report.table_markdown('5.3', records))
  assert rows['RDST-E']['PSNR'] == '27.20 (1.00)' and rows['RDST-E']['PSNR Δ'] == '-0.04'
  _, rows = parse(report.table_markdown('5.2', records))
  assert (rows['RDST-E']['PSNR T1Gd'], rows['RDST-E']['PSNR T1Gd Δ']) == ('33.40 (1.00)', '+0.08')
  assert rows['RDST-E']['Dice-WT'] == '0.7830 (0.0100)'
  assert rows['RDST-E']['PSNR (all)'] == '33.00 (1.00)' and 'PSNR (all) thesis' not in rows['HR']


def test_table_5_6_rows_by_fine_tuning_loss(rdst_grid):
  records = report_runs.find_records([rdst_grid])
  text = report.table_markdown('5.6', records)
  _, rows = parse(text)
  assert rows['Baseline']['PSNR'] == '33.00 (1.00)'
  assert rows['L_E(1)']['PSNR'] == '33.30 (1.00)' and rows['L_E(1)']['FID'] == '80.00'
  assert (rows['L_E(1)']['FID thesis'], rows['L_E(1)']['FID Δ']) == ('82.13', '-2.13')
  assert rows['L_HRL']['Dice-T'] == '0.8900 (0.0100)'
  assert rows['L_HRL']['Dice-T Δ'] == '+0.0001'
  assert rows['L1 only']['PSNR'] == '-' and 'L1 only (configs/rdst_e.py:stage=finetune,' \
      'loss=l1 --config.init_from={grid}/stage=l1)' in text


def test_cli_table_with_its_figure(rdst_grid, tmp_path, capsys):
  figs = tmp_path / 'figs'
  assert report.main([f'--runs={rdst_grid}', '--table=5.9', f'--plots={figs}']) == 0
  assert capsys.readouterr().out.startswith('## Table 5.9:')
  assert sorted(p.name for p in figs.iterdir()) == ['fig5.11.png']   # Fig. 5.11: Table 5.9's


def test_table_5_10_unet_dataset(tmp_path, configs):
  unet = configs('configs/unet_seg.py', 'demo')
  unet['eval']['dataset'] = 'acdc'
  write_run(tmp_path / 'unets' / 'acdc', unet, {})
  (tmp_path / 'unets' / 'acdc' / 'export').mkdir()
  c = configs('configs/rdst_e.py', 'stage=finetune,loss=e1')
  c['eval']['dataset'] = 'oasis'
  c['train']['frozen']['unet'] = str(tmp_path / 'unets' / 'acdc' / 'export')
  write_run(tmp_path / 'runs' / 'oasis_with_acdc_unet', c,
            fixed_results('rdst_e', 33.28, 0.929, 0.8876))
  records = report_runs.find_records([tmp_path / 'runs'])
  assert records[0].facts['unet_dataset'] == 'acdc'
  _, rows = parse(report.table_markdown('5.10', records))
  assert rows['OASIS']['ACDC U-Net PSNR'] == '33.28 (1.00)'
  assert rows['OASIS']['ACDC U-Net PSNR Δ'] == '+0.01'
  assert rows['OASIS']['ACDC U-Net Dice-T Δ'] == '+0.0002'
  assert rows['OASIS']['OASIS U-Net PSNR'] == '-'


def test_cli_all_writes_report_and_figures(miassr_grid, rdst_grid, tmp_path, capsys):
  out = tmp_path / 'report'
  assert report.main([f'--runs={miassr_grid},{rdst_grid}', '--all', f'--out={out}']) == 0
  printed = capsys.readouterr().out
  text = (out / 'report.md').read_text()
  assert printed == text
  for name in ('4.1', '4.3', '4.5', '5.1', '5.2', '5.3', '5.5', '5.6', '5.7'):
    assert f'## Table {name}:' in text
  assert '## Table 5.4:' not in text and '## Table 3.3' not in text
  assert text.endswith('## Without runs\n\n3.3, 3.5, 4.2, 5.4, 5.10.\n')
  pngs = sorted(p.name for p in out.iterdir() if p.suffix == '.png')
  assert pngs == ['fig4.10.png', 'fig4.4.png', 'fig4.5.png', 'fig4.8.png', 'fig4.9.png',
                  'fig5.10.png', 'fig5.11.png']
  assert text.count('## Figure 4.10') == 1 and '| RaGAN | 36.00 | 0.9550 | 45.00 |' in text
  assert '![Figure 4.10](fig4.10.png)' in text and 'Table 4.1 above' in text


@pytest.mark.parametrize('args, message', [
    (['--runs={tree}', '--table=4.3'], 'no run fills Table 4.3'),
    (['--runs={tree}', '--table=6.1'], '--table must be one of'),
    (['--runs={tree}', '--figure=4.6', '--plots={tree}'], '--figure must be one of'),
    (['--runs={tree}', '--figure=4.5'], '--figure needs --plots=DIR'),
    (['--runs={tree}', '--all'], '--all needs --out=DIR'),
    (['--runs={tree}', '--all', '--out={out}'], 'no run fills any table or figure'),
])
def test_cli_errors(tmp_path, capsys, args, message):
  (tmp_path / 'tree').mkdir()
  values = dict(tree=tmp_path / 'tree', out=tmp_path / 'out')
  with pytest.raises(SystemExit) as e:
    report.main([a.format(**values) for a in args])
  assert e.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('error: ') and message in err[0]


def test_matching_rules():
  rt = report_tables
  assert rt.rank(0.006, 0.006000000001) == 0
  assert rt.rank(math.inf, math.inf) == 0 and rt.rank(1.0, math.inf) is None
  assert rt.rank('rdst', ('rdst_e', 'rdst')) == 1 and rt.rank(None, None) == 0
  assert rt.rank(True, 1) is None and rt.rank(4, 4.0) == 0
  rec = lambda order, **facts: report_runs.Record(pathlib.Path(f'r{order}'), {}, {},
                                                  facts=facts, order=order)
  runs = [rec(0, model='a', b=2), rec(1, model='a', b=16), rec(2, model='a', b=16)]
  cell = rt.choose(runs, {'model': 'a'}, {'b': 16})
  assert cell.record.order == 1 and [r.order for r in cell.others] == [2] and not cell.deviations
  cell = rt.choose(runs[:1], {'model': 'a'}, {'b': 16})
  assert cell.deviations == ['b=2 (thesis 16)']
  assert rt.choose(runs, {'model': 'b'}, {}) is None


def test_figure_5_10_points(tmp_path, configs):
  from experiments import report_figures  # pylint: disable=import-outside-toplevel
  base = configs('configs/rdst_e.py', 'stage=l1')
  write_run(tmp_path / 'ref', base, fixed_results('rdst_e', 33.0, 0.92, 0.88))
  for window, psnr in ((4, 32.5), (2, 32.0)):
    c = json.loads(json.dumps(base))
    c['model']['kwargs']['window_size'] = window
    write_run(tmp_path / f'window={window}', c, fixed_results('rdst_e', psnr, 0.92, 0.88))
  both = json.loads(json.dumps(base))      # two hyper-parameters off RDST-E's: in no panel
  both['model']['kwargs'].update(window_size=4, embed_dim=30)
  write_run(tmp_path / 'both', both, fixed_results('rdst_e', 30.0, 0.9, 0.8))
  points = report_figures.hyper_points(report_runs.find_records([tmp_path]))
  assert [(v, p) for v, p, _ in points['kw.window_size']] == [(2.0, 32.0), (4.0, 32.5),
                                                              (8.0, 33.0)]
  assert [(v, p) for v, p, _ in points['kw.embed_dim']] == [(60.0, 33.0)]


def test_table_4_2_per_modality_over_scales(tmp_path, configs):
  c = configs('configs/miassr.py', 'multimodal')
  results = scale_results(35.0, 0.95, fid=60.0)
  for i, entry in enumerate(results['per_scale'].values()):
    entry['model']['per_channel'] = {
        m: _entry(36.0 + k + 0.3 * (i - 1), 0.95, fid=61.0) for k, m in
        enumerate(('t1ce', 't1', 't2', 'flair'))}
  write_run(tmp_path / 'runs' / 'multimodal', c, results)
  records = report_runs.find_records([tmp_path / 'runs'])
  assert records[0].facts['dataset'] == 'brats' and records[0].facts['in_channels'] == 4
  _, rows = parse(report.table_markdown('4.2', records))
  m = rows['MIASSR']
  assert (m['BraTS-T1 PSNR'], m['BraTS-T1 PSNR thesis'], m['BraTS-T1 PSNR Δ']) == \
      ('37.00', '36.89', '+0.11')
  assert (m['BraTS-T1ce PSNR'], m['BraTS-T1ce FID'], m['BraTS-T1ce FID Δ']) == \
      ('36.00', '61.00', '-0.06')
  assert m['ACDC PSNR'] == '-' and m['ACDC PSNR thesis'] == '30.94'
  assert rows['Bicubic']['BraTS-T1 PSNR'] == '-'     # bicubic has no per-channel entries here
