"""The specs of the dissertation's Tables 4.1-4.6 and 5.1-5.10, and of the figures' data grids.

Each spec says which runs fill which cells (experiments/report_tables.py explains the matching);
the facts are experiments/report_runs.py's. What each table needs from a run:

  4.1, 4.2, 4.3-4.6, Figs 4.4, 4.5, 4.8-4.10   per-scale test scores: results.json 'per_scale'
      (trainer 'arbitrary_scale') or eval/test/results.json (`python -m medsr_jax.evaluate`, the
      only source for fixed-scale models such as EDSR); each scale's 'model' / 'bicubic' entry
      with psnr_mean, ssim_mean and, for the FID columns, 'fid'; 'per_channel' for BraTS (4.2);
      export/config.json 'param_count' for the Params columns.
  5.1-5.10, Figs 5.10, 5.11   results.json 'model' / 'bicubic' {psnr_mean, psnr_std, ssim_mean,
      ssim_std} (trainer 'sr' or 'gan', x4), 'per_channel' for the per-modality BraTS columns of
      5.2, 'fid' for Table 5.6, the Dice section results['dice'] (a U-Net given to the run:
      config.eval.unet or train.frozen.unet), results['complexity'] {'macs_g', 'fps'} for the
      MACs / FPS columns.
"""

from __future__ import annotations

from experiments.report_tables import Column, Metric, Part, Row, Table

# ------------------------------------------------------------------------------------------------
# metrics

PSNR = Metric('psnr', 'PSNR', 'psnr', 2)
SSIM = Metric('ssim', 'SSIM', 'ssim', 4)
FID = Metric('fid', 'FID', 'fid', 2, std=False)
PARAMS = Metric('params_m', 'Params (M)', 'params', 3, std=False)
MACS = Metric('macs_g', 'MACs (G)', 'macs', 2, std=False)
FPS = Metric('fps', 'FPS', 'fps', 2, std=False)
LABELS = {'GM': 'Dice-G', 'WM': 'Dice-W', 'lesion': 'Dice-Lesion'}


def dice(region: str) -> Metric:
  return Metric(f'dice_{region.lower()}', LABELS.get(region, f'Dice-{region}'), 'dice', 4,
                region=region)


OASIS_DICE = tuple(dice(r) for r in ('T', 'GM', 'WM', 'CSF'))
BRATS_DICE = tuple(dice(r) for r in ('WT', 'ET', 'TC'))
ACDC_DICE = tuple(dice(r) for r in ('T', 'LV', 'RV', 'MC'))
COVID_DICE = tuple(dice(r) for r in ('T', 'LL', 'RL', 'lesion'))

# ------------------------------------------------------------------------------------------------
# chapter 4: MIASSR (configs/miassr.py), arbitrary scales

OASIS = ('oasis', 'sample')       # the embedded sample (brain slices) stands in, flagged
CH4 = dict(match={'roi': False, 'dataset': OASIS}, setting={'dataset': 'oasis', 'blur': True},
           over_scales=True)
MIASSR = {'trainer': 'arbitrary_scale', 'model': 'miassr'}
MIASSR_SETTING = {'w': 64, 'b': 16, 'stages': 'warmup+gan', 'eta': 0.006, 'gamma': 0.001,
                  'gan': 'wgan_gp', 'critic': 'miassr_d', 'in_channels': 1}
BRANCH = {**MIASSR_SETTING, 'stages': 'gan'}  # the loss ablations branch from one warm-up
CFG = 'configs/miassr.py'
EVAL = 'then python -m medsr_jax.evaluate --workdir=RUN --scales=1.5,2,2.5,3,3.5,4'


def _fixed_scale(label, model, hint, **match):
  return Row(label, {'model': model, **match}, hint=f'{hint}, {EVAL}')


TABLE_4_1 = Table(
    '4.1', 'MIASSR against SOTA methods at arbitrary scales in (1, 4] on OASIS (Table 4.1)',
    (Part(rows=(
        Row('Bicubic', method='bicubic'),
        _fixed_scale('SRGAN', 'srresnet', 'configs/srgan.py', trainer='gan'),
        _fixed_scale('EDSR', 'edsr', 'configs/baseline.py:model=edsr'),
        _fixed_scale('ESRGAN (L1)', 'esrgan', 'configs/baseline.py:model=esrgan'),
        Row('MDSR', {'model': 'mdsr'}, hint='an mdsr run, ' + EVAL),
        _fixed_scale('RDN', 'rdn', 'configs/baseline.py:model=rdn'),
        _fixed_scale('SRDenseNet', 'srdensenet', 'configs/baseline.py:model=srdensenet'),
        Row('MetaRDN', {'model': 'meta_rdn'}, {'stages': 'warmup'},
            hint=f'{CFG}:stage=warmup,model=meta_rdn'),
        Row('MIASSR', MIASSR, MIASSR_SETTING, hint=f'{CFG}:stage=full')),
        metrics=(PSNR, SSIM, FID, PARAMS)),),
    **CH4, note='Fixed-scale models are scored by `python -m medsr_jax.evaluate` (one model run '
    'up-and-down at every scale; the thesis used its x2 / x3 / x4 models, three parameter sets).')

BRATS_CHANNELS = (('t1', 'T1'), ('t1ce', 'T1ce'), ('t2', 'T2'), ('flair', 'Flair'))
TABLE_4_2 = Table(
    '4.2', 'MIASSR, EDSR, MetaRDN and bicubic on BraTS (per modality), ACDC and COVID-CT '
    '(Table 4.2)',
    (Part(rows=(
        Row('Bicubic', method='bicubic'),
        _fixed_scale('EDSR', 'edsr', 'configs/baseline.py:model=edsr on the dataset'),
        Row('MetaRDN', {'model': 'meta_rdn'}, hint=f'{CFG}:stage=warmup,model=meta_rdn on the '
            'dataset'),
        Row('MIASSR', MIASSR, hint=f'{CFG}:multimodal (BraTS); {CFG}:transfer (ACDC, COVID-CT)')),
        metrics=(Metric('psnr', 'PSNR', 'psnr', 2, std=False), FID),
        columns=tuple(Column(f'brats_{c}', f'BraTS-{label}', {'dataset': 'brats'}, channel=c)
                      for c, label in BRATS_CHANNELS) + (
            Column('acdc', 'ACDC', {'dataset': 'acdc'}),
            Column('covid_ct', 'COVID-CT', {'dataset': 'covid_ct'}))),),
    match={'roi': False}, setting={'blur': True}, over_scales=True,
    note='BraTS columns read each modality\'s per_channel scores of a 4-channel run.')


def _ablation(name, caption, key, values, setting, hint, row_match=None, match=None):
  """Rows `key`=value; `match`: the table's other hard facts (the loss ablations fix the other
  weight: a VGG-only run is no 'gamma = 0' run), `row_match`: per-row overrides of them."""
  rows = tuple(Row(f'{key}={v}', {key: float('inf') if v == 'inf' else float(v),
                                  **(row_match or {}).get(v, {})}, hint=hint(v)) for v in values)
  return Table(name, caption, (Part(rows=rows, metrics=(PSNR, SSIM, FID) +
                                    ((PARAMS,) if key in ('w', 'b') else ())),),
               match={**CH4['match'], **MIASSR, **(match or {})},
               setting={**CH4['setting'], **setting}, over_scales=True, row_header=key)


NO_ADV = {'gan': None, 'critic': None}
TABLE_4_3 = _ablation('4.3', 'the width w of EDSR-lite (Table 4.3)', 'w',
                      ('4', '8', '16', '32', '64', '128'), MIASSR_SETTING,
                      lambda v: f'{CFG}:' + ('stage=full' if v == '64' else f'w={v}'))
TABLE_4_4 = _ablation('4.4', 'the depth b (residual blocks) of EDSR-lite (Table 4.4)', 'b',
                      ('2', '4', '8', '16', '32', '64'), MIASSR_SETTING,
                      lambda v: f'{CFG}:' + ('stage=full' if v == '16' else f'b={v}'))
TABLE_4_5 = _ablation('4.5', 'the perceptual-loss weight eta, gamma = 0.001 (Table 4.5)', 'eta',
                      ('0', '0.006', '0.01', '0.1', '1', 'inf'), BRANCH,
                      lambda v: f'{CFG}:stage=gan' + ('' if v == '0.006' else f',eta={v}') +
                      ' --config.init_from={grid}/stage=warmup',
                      match={'gamma': 0.001}, row_match={'inf': {'gamma': 0.0, **NO_ADV}})
TABLE_4_6 = _ablation('4.6', 'the adversarial-loss weight gamma, eta = 0.006 (Table 4.6)',
                      'gamma', ('0', '0.001', '0.01', '0.1', '1', 'inf'), BRANCH,
                      lambda v: f'{CFG}:stage=gan' + ('' if v == '0.001' else f',gamma={v}') +
                      ' --config.init_from={grid}/stage=warmup',
                      match={'eta': 0.006}, row_match={'0': NO_ADV, 'inf': {'eta': 0.0}})

# ------------------------------------------------------------------------------------------------
# chapter 5: RDST (configs/rdst.py, configs/rdst_e.py) and the fixed-scale baselines, x4

CH5 = {'trainer': ('sr', 'gan'), 'scale': 4.0, 'roi': False}
SOTA_SETTING = {'stages': 'l1'}   # the thesis' comparison models: 100k steps of L1
RDST_E = {'model': ('rdst_e', 'rdst'), 'kw.num_blocks': 4, 'kw.gff': 'none'}
RDST = {'model': ('rdst', 'rdst_e'), 'kw.num_blocks': 8, 'kw.gff': 'none'}
RDST_GFF = {'model': ('rdst_mlp_gff', 'rdst_gff', 'rdst'), 'kw.num_blocks': 8,
            'kw.gff': ('mlp', 'conv')}
FINETUNE = ('finetune', 'l1+finetune')
SOTA = (('EDSR', 'edsr'), ('RDN', 'rdn'), ('RCAN', 'rcan'), ('HAN', 'han'), ('SwinIR', 'swinir'))
DATASET_NAMES = {'oasis': 'OASIS', 'brats': 'BraTS', 'acdc': 'ACDC', 'covid_ct': 'COVID-CT'}
DATASET_MATCH = {'oasis': OASIS, 'brats': 'brats', 'acdc': 'acdc', 'covid_ct': 'covid_ct'}


def _sota(label, model):
  return Row(label, {'model': model}, SOTA_SETTING, hint=f'configs/baseline.py:model={model}')


def _rdst(label, family, loss, cfg):
  stage = 'stage=l1' if loss == 'l1' else f'stage=finetune,loss={loss}'
  hint = f'configs/{cfg}.py:{stage}' + ('' if loss == 'l1' else
                                        ' --config.init_from=RUN_OF_THE_L1_STAGE')
  return Row(label, {**family, 'loss': loss}, {} if loss == 'l1' else {'stages': FINETUNE},
             hint=hint)


def _comparison(name, dataset, metrics, extra=''):
  rows = (Row('HR', method='HR'), Row('Bicubic', method='bicubic')) + \
      tuple(_sota(label, model) for label, model in SOTA) + \
      (_rdst('RDST-E', RDST_E, 'e1', 'rdst_e'), _rdst('RDST', RDST, 'e1', 'rdst'))
  return Table(name, f'RDST against SOTA methods at x4 on {DATASET_NAMES[dataset]} (Table {name})'
               + extra, (Part(rows=rows, metrics=metrics),),
               match={**CH5, 'dataset': DATASET_MATCH[dataset]},
               setting={'dataset': dataset})


def _modality(kind, channel, label, digits):
  return Metric(f'{kind}_{label.lower()}', f'{kind.upper()} {label}', kind, digits,
                channel=channel)


TABLE_5_1 = _comparison('5.1', 'oasis', (PSNR, SSIM) + OASIS_DICE + (MACS, Metric(
    'params_m', 'Params (M)', 'params', 2, std=False)))
TABLE_5_2 = _comparison('5.2', 'brats', BRATS_DICE + tuple(
    _modality(kind, c, label, d) for kind, d in (('psnr', 2), ('ssim', 4))
    for c, label in (('t1ce', 'T1Gd'), ('t1', 'T1'), ('t2', 'T2'), ('flair', 'Flair'))) + (
    Metric('psnr', 'PSNR (all)', 'psnr', 2, thesis=False),
    Metric('ssim', 'SSIM (all)', 'ssim', 4, thesis=False)),
    extra='; per-modality columns need per_channel scores')
TABLE_5_3 = _comparison('5.3', 'acdc', (PSNR, SSIM) + ACDC_DICE)
TABLE_5_4 = _comparison('5.4', 'covid_ct', (PSNR, SSIM) + COVID_DICE)

TABLE_5_5 = Table(
    '5.5', 'architecture, attention and efficiency on OASIS, every model 100k steps of L1 '
    '(Table 5.5)',
    (Part(rows=(
        _sota('EDSR-lite', 'edsr_lite'), _sota('EDSR', 'edsr'), _sota('RDN', 'rdn'),
        _sota('ConvNet-lite', 'convnet_lite'), _sota('ConvNet-large', 'convnet_large'),
        _sota('RCAN', 'rcan'), _sota('HAN', 'han'), _sota('SwinIR-lite', 'swinir_light'),
        _sota('SwinIR', 'swinir'),
        _rdst('RDST-E (L1)', RDST_E, 'l1', 'rdst_e'), _rdst('RDST (L1)', RDST, 'l1', 'rdst'),
        Row('RDST+GFF (L1)', {**RDST_GFF, 'loss': 'l1'}, hint='configs/baseline.py:model='
            'rdst_mlp_gff')),
        metrics=(PSNR, SSIM, dice('T'), MACS, Metric('params_m', 'Params (M)', 'params', 2,
                                                     std=False), FPS)),),
    match={**CH5, 'dataset': OASIS, 'loss': 'l1'}, setting={'dataset': 'oasis', 'stages': 'l1'})

FT_LOSSES = (('L_E(1)', 'e1'), ('L_E(2)', 'e2'), ('L_E(3)', 'e3'), ('L_E(4)', 'e4'),
             ('L_E(5)', 'e5'), ('L_sum E(i)', 'esum'), ('L_D', 'd'), ('L_HRL', 'hrl'))
RDST_FAMILY = {'model': ('rdst_e', 'rdst'), 'kw.gff': 'none'}
FT = 'configs/rdst_e.py:stage=finetune,loss={} --config.init_from={{grid}}/stage=l1'
TABLE_5_6 = Table(
    '5.6', 'the segmentation-based perceptual losses and their alternatives, RDST-E fine-tuned '
    'for 20k steps on OASIS (Table 5.6)',
    (Part(rows=(
        Row('Baseline', {'loss': 'l1', 'stages': 'l1'}, hint='configs/rdst_e.py:stage=l1'),
        Row('L1 only', {'loss': 'l1', 'stages': FINETUNE}, hint=FT.format('l1')),
        Row('WGANGP+VGG', {'loss': 'wgan_gp'}, hint=FT.format('wgan_gp')),
        Row('VGG only', {'loss': 'vgg'}, hint=FT.format('vgg'))) +
        tuple(Row(label, {'loss': loss}, hint=FT.format(loss)) for label, loss in FT_LOSSES),
        metrics=(PSNR, SSIM, FID) + OASIS_DICE),),
    match={**CH5, **RDST_FAMILY, 'dataset': OASIS},
    setting={'dataset': 'oasis', 'kw.num_blocks': 4, 'stages': FINETUNE})

TABLE_5_7 = Table(
    '5.7', 'Dice of the whole region (Dice-T; Dice-WT on BraTS) after fine-tuning with L_HRL, '
    'against SOTA methods (Table 5.7)',
    (Part(rows=(Row('HR', method='HR'), Row('Bicubic', method='bicubic'), _sota('EDSR', 'edsr'),
                _sota('RCAN', 'rcan'), _rdst('RDST-E', RDST_E, 'e1', 'rdst_e'),
                _rdst('RDST', RDST, 'e1', 'rdst'), _sota('RDN', 'rdn'), _sota('HAN', 'han'),
                _sota('SwinIR', 'swinir'), _rdst('RDST-E (L_HRL)', RDST_E, 'hrl', 'rdst_e'),
                _rdst('RDST (L_HRL)', RDST, 'hrl', 'rdst')),
          metrics=(Metric('dice', 'Dice', 'dice', 4),),
          columns=tuple(Column(k, v, {'dataset': DATASET_MATCH[k]}, {'dataset': k})
                        for k, v in DATASET_NAMES.items())),),
    match=CH5)


def _part_5_8(dataset, best, metrics):
  name = DATASET_NAMES[dataset]
  rows = (Row(f'{name}: {best[0]}', {'model': best[1]}, SOTA_SETTING,
              hint=f'configs/baseline.py:model={best[1]}'),
          Row(f'{name}: RDST-E (L_HRL)', {**RDST_E, 'loss': 'hrl'}, {'stages': FINETUNE},
              hint=FT.format('hrl')),
          Row(f'{name}: RDST (L_HRL)', {**RDST, 'loss': 'hrl'}, {'stages': FINETUNE},
              hint=FT.format('hrl').replace('rdst_e.py', 'rdst.py')))
  rows = tuple(Row(r.label, {**r.match, 'dataset': DATASET_MATCH[dataset]},
                   {**r.setting, 'dataset': dataset}, hint=r.hint) for r in rows)
  return Part(rows=rows, metrics=metrics, title=name)


TABLE_5_8 = Table(
    '5.8', 'Dice of every region after fine-tuning with L_HRL, against the best SOTA method of '
    'each dataset (Table 5.8)',
    (_part_5_8('oasis', ('SwinIR', 'swinir'), OASIS_DICE),
     _part_5_8('brats', ('SwinIR', 'swinir'), BRATS_DICE),
     _part_5_8('acdc', ('SwinIR', 'swinir'), ACDC_DICE),
     _part_5_8('covid_ct', ('RCAN', 'rcan'), COVID_DICE)),
    match=CH5)

TRAININGS = (('100k-L1', {'loss': 'l1', 'stages': 'l1'}, 'stage=l1'),
             ('+20k-L1', {'loss': 'l1', 'stages': FINETUNE + ('l1+l1',)}, 'loss=l1'),
             ('+20k-L_E(1)', {'loss': 'e1'}, 'loss=e1'),
             ('+20k-L_HRL', {'loss': 'hrl'}, 'loss=hrl'))
MODELS_5_9 = (('RDN', {'model': 'rdn'}, 'rdn'), ('RCAN', {'model': 'rcan'}, 'rcan'),
              ('SwinIR', {'model': ('swinir', 'swinir_light')}, 'swinir_light'),
              ('RDST', RDST, 'rdst'))


def _row_5_9(label, model, arg, training, match, option):
  if option == 'stage=l1':
    hint = f'configs/rdst.py:stage=l1,model={arg}'
  else:
    hint = (f'configs/rdst.py:stage=finetune,model={arg},{option} '
            f'--config.init_from={{grid}}/stage=l1,model={arg}')
  return Row(f'{label}: {training}', {**model, **match}, hint=hint.replace(',model=rdst', ''))


TABLE_5_9 = Table(
    '5.9', 'the segmentation-based perceptual losses on other models: 100k L1 steps, then 20k '
    'more with L1, L_E(1) or L_HRL, on OASIS (Table 5.9)',
    (Part(rows=tuple(_row_5_9(label, model, arg, training, match, option)
                     for label, model, arg in MODELS_5_9
                     for training, match, option in TRAININGS),
          metrics=(PSNR, SSIM) + OASIS_DICE),),
    match={**CH5, 'dataset': OASIS}, setting={'dataset': 'oasis', 'stages': FINETUNE},
    note='SwinIR rows take swinir runs, else swinir_light ones (configs/rdst.py sweeps '
    'swinir_light; the thesis\' numbers are the full SwinIR\'s), flagged by the model name.')

UNETS = (('oasis', 'OASIS U-Net'), ('acdc', 'ACDC U-Net'), ('covid_ct', 'COVID U-Net'))
TABLE_5_10 = Table(
    '5.10', 'L_E(1) through a U-Net trained on another dataset (RDST-E; Table 5.10)',
    (Part(rows=tuple(Row(DATASET_NAMES[d], {'dataset': DATASET_MATCH[d]},
                         hint=f'configs/rdst_e.py on {DATASET_NAMES[d]} with '
                         '--config.train.frozen.unet=U-NET_RUN/export')
                     for d in ('oasis', 'acdc', 'covid_ct')),
          metrics=(PSNR, dice('T')),
          columns=(Column('baseline', '120k-L1', {'loss': 'l1', 'stages': FINETUNE}),) +
          tuple(Column(f'unet_{d}', label, {'loss': 'e1', 'unet_dataset': DATASET_MATCH[d]})
                for d, label in UNETS)),),
    match={**CH5, **RDST_FAMILY}, setting={'kw.num_blocks': 4},
    note='The U-Net\'s dataset is read from the run that exported it (train.frozen.unet = '
    'RUN/export).')

TABLES = {t.name: t for t in (TABLE_4_1, TABLE_4_2, TABLE_4_3, TABLE_4_4, TABLE_4_5, TABLE_4_6,
                              TABLE_5_1, TABLE_5_2, TABLE_5_3, TABLE_5_4, TABLE_5_5, TABLE_5_6,
                              TABLE_5_7, TABLE_5_8, TABLE_5_9, TABLE_5_10)}

# ------------------------------------------------------------------------------------------------
# the data grids of the figures (no thesis numbers: figures have none)

META = (('EDSR-lite (MIASSR)', 'miassr'), ('Meta-SRResNet', 'meta_srresnet'),
        ('Meta-EDSR', 'meta_edsr'), ('Meta-SRDenseNet', 'meta_srdensenet'),
        ('Meta-RDN', 'meta_rdn'), ('Meta-ESRGAN', 'meta_esrgan'), ('Meta-MDSR', 'meta_mdsr'))
FIG_4_8 = Table(
    'fig4.8', 'the feature extractors of MIASSR trained with L1 (Fig. 4.8)',
    (Part(rows=tuple(Row(label, {'model': model},
                         {'w': 64, 'b': 16} if model == 'miassr' else {},
                         hint=f'{CFG}:stage=warmup' + ('' if model == 'miassr' else
                                                       f',model={model}'))
                     for label, model in META),
          metrics=(PSNR, SSIM, FID, PARAMS)),),
    match={**CH4['match'], 'trainer': 'arbitrary_scale', 'loss': 'l1'},
    setting={**CH4['setting'], 'stages': 'warmup'}, over_scales=True, thesis=False)

FIG_4_9 = Table(
    'fig4.9', 'EDSR-lite, EDSR and RDN with L1 only and with the adversarial and perceptual '
    'losses (Fig. 4.9)',
    (Part(rows=tuple(Row(f'{label}: {variant}', {'model': model, 'loss': loss},
                         {'w': 64, 'b': 16} if model == 'miassr' else {},
                         hint=f'{CFG}:stage={stage}' + ('' if model == 'miassr' else
                                                        f',model={model}'))
                     for label, model in (('EDSR-lite', 'miassr'), ('EDSR', 'meta_edsr'),
                                          ('RDN', 'meta_rdn'))
                     for variant, loss, stage in (('L1', 'l1', 'warmup'),
                                                  ('L1+adv+perc', 'wgan_gp', 'gan'))),
          metrics=(PSNR, SSIM, FID)),),
    match={**CH4['match'], 'trainer': 'arbitrary_scale'}, setting=CH4['setting'],
    over_scales=True, thesis=False)

GAN_ROWS = (('WGAN-GP', {'gan': 'wgan_gp'}, 'stage=gan'),
            ('GAN', {'gan': 'vanilla', 'critic': 'miassr_d'}, 'stage=gan,gan=vanilla'),
            ('RaGAN', {'gan': 'ragan'}, 'stage=gan,gan=ragan'),
            ('WGAN', {'gan': 'wgan'}, 'stage=gan,gan=wgan'),
            ('GAN (published code: BN critic)', {'gan': 'vanilla', 'critic': 'srgan_d'},
             'stage=gan,code_gan'))
FIG_4_10 = Table(
    'fig4.10', 'the GAN variations of MIASSR (Fig. 4.10; the table under it)',
    (Part(rows=tuple(Row(label, match, hint=f'{CFG}:{arg} --config.init_from={{grid}}/stage='
                         'warmup') for label, match, arg in GAN_ROWS),
          metrics=(PSNR, SSIM, FID)),),
    match={**CH4['match'], **MIASSR}, setting={**CH4['setting'], **BRANCH}, over_scales=True,
    thesis=False)

FIG_5_11 = Table(
    'fig5.11', 'the segmentation-based perceptual losses on RDN, RCAN and SwinIR (Fig. 5.11)',
    (Part(rows=tuple(r for r in TABLE_5_9.parts[0].rows if not r.label.startswith('RDST')),
          metrics=(PSNR, dice('T'))),),
    match=TABLE_5_9.match, setting=TABLE_5_9.setting, thesis=False)

# Fig. 5.10: RDST-E's hyper-parameters, one panel each; the other four at RDST-E's values.
RDST_E_DEFAULTS = {'kw.window_size': 8, 'kw.embed_dim': 60, 'kw.stl_per_dense': 2,
                   'kw.dense_layers': 3, 'kw.num_blocks': 4}
HYPER_LABELS = {'kw.window_size': 'window size', 'kw.embed_dim': 'embedding dimension',
                'kw.stl_per_dense': 'STLs per DSTB', 'kw.dense_layers': 'DSTBs per RDSTB',
                'kw.num_blocks': 'RDSTBs'}
FIG_5_10_MATCH = {**CH5, 'model': ('rdst_e', 'rdst'), 'kw.gff': 'none', 'loss': 'l1',
                  'dataset': OASIS}

FIGURE_GRIDS = {t.name: t for t in (FIG_4_8, FIG_4_9, FIG_4_10, FIG_5_11)}
