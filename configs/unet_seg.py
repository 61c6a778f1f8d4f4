"""Segmentation U-Net of the RDST chapter (thesis §5.2.2, §5.3.3): `trainers/segmentation.py`.

  python -m medsr_jax.main --config=configs/unet_seg.py:dataset=oasis --workdir=runs/unet_oasis \\
      --config.data.path=SHARDS_OASIS        # data_prep shards with labels (protocol rdst)
  python -m medsr_jax.main --config=configs/unet_seg.py:dataset=brats --workdir=runs/unet_brats \\
      --config.data.path=SHARDS_BRATS
  python -m medsr_jax.main --config=configs/unet_seg.py:demo --workdir=runs/unet_demo

The export (`RUN/export`) is the frozen U-Net of the segmentation-based perceptual losses:
`--config.train.frozen.unet=RUN/export` of an RDST fine-tuning run (or `config.prerequisites =
{'unet': 'configs/unet_seg.py:demo'}`, which trains this demo first).

Options after the colon: `dataset=oasis|brats|acdc|covid_ct` (brats: 4 input channels, the
modalities t1ce, t1, t2, flair in the thesis' order; the others 1), `demo`, `batch=N`, and the
model kwargs `stem_features=N`, `stage_widths=64/128/256/512`, `blocks_per_stage=3/4/6/3`,
`decoder_channels=256/128/64/32/16` (sequences joined by '/', since ',' separates options;
unset: the thesis' smp defaults, or the demo's reduced U-Net). The same kwargs can be set with
`--config.model.kwargs.stage_widths="(64, 128, 256, 512)"`.

The thesis recipe (§5.3.3: "trained with Dice loss (Equation 5.12) for 100k steps with the Adam
optimiser. The learning rate is initialised as 0.0001 and halved at [50k, 75k]"):
  * network: 'unet_seg', smp.Unet with a ResNet-34 encoder of depth 5 (stem 64, stages
    (64, 128, 256, 512) of (3, 4, 6, 3) BasicBlocks), decoder (256, 128, 64, 32, 16), 4 classes
    (reference spec §5.16); trained from its own random init (the author started from smp's
    ImageNet encoder, which is not available here; `--config.init_from=EXPORT` starts from any
    'unet_seg' export, e.g. converted PyTorch weights);
  * data: whole HR slices of the train split with their label maps, sides edge-padded at the
    bottom / right to multiples of 32 (labels padded with 0); no augmentation (none is given);
  * loss: smp `DiceLoss('multiclass')` over all 4 classes (`losses.segmentation.dice_loss`);
  * Adam, lr 1e-4 halved at 50k and 75k of 100k steps. Betas (0.9, 0.999): PyTorch's defaults,
    as the U-Net's training code is not in the author's repositories (spec §5.16). Batch size:
    the thesis gives none; 16 here (the batch of the chapter-3 networks of this repository;
    a whole 160 x 128 OASIS slice per item);
  * validation: mean Dice over the foreground classes on whole validation slices every 2,000
    steps; the checkpoint with the best one is evaluated on the test split and exported
    (`segmentation.export_params='best'`; 'final': the last params).

`demo` (the embedded Colin27 sample, its tissue labels 0 background, 1 CSF, 2 GM, 3 WM): a
reduced U-Net (stem 16, stages (16, 32, 32, 64) of one block each, decoder (64, 32, 16, 16, 8);
245,108 parameters) on the 93 whole 160 x 128 training slices, batch 16, 200 steps of Adam at
lr 2e-3 halved at 100 and 150 (a larger rate than the thesis' so that a few hundred steps
suffice), validating every 50 steps. About 2 minutes on 2 idle CPU cores (~0.4 s a step; 3 min
measured on 2 shared, busy cores); test Dice CSF 0.84, GM 0.92, WM 0.96 (mean 0.91).
"""

from __future__ import annotations

import ml_collections

from medsr_jax import config_lib

BATCH = 16
STEPS = 100_000
DATASETS = ('oasis', 'brats', 'acdc', 'covid_ct')
BRATS_MODALITIES = ('t1ce', 't1', 't2', 'flair')
NUM_CLASSES = 4

DEMO_ARCH = dict(stem_features=16, stage_widths=(16, 32, 32, 64), blocks_per_stage=(1, 1, 1, 1),
                 decoder_channels=(64, 32, 16, 16, 8))


def get_config(arg=None):
  opts = config_lib.parse_arg(arg, dataset='oasis', demo=False, batch=BATCH, stem_features=0,
                              stage_widths='', blocks_per_stage='', decoder_channels='')
  if opts.dataset not in DATASETS:
    raise ValueError(f'dataset must be one of {DATASETS}, got {opts.dataset!r}')
  c = config_lib.base_sr_config()
  c.trainer = 'segmentation'
  in_channels = len(BRATS_MODALITIES) if opts.dataset == 'brats' else 1
  arch = dict(DEMO_ARCH) if opts.demo else {}
  if opts.stem_features:
    arch['stem_features'] = int(opts.stem_features)
  for key in ('stage_widths', 'blocks_per_stage', 'decoder_channels'):
    if opts[key]:
      arch[key] = _int_tuple(key, opts[key])
  c.model = config_lib.model_config('unet_seg', scale=1, in_channels=in_channels,
                                    num_classes=NUM_CLASSES, **arch)
  c.data.source = opts.dataset          # without data.path: an error naming the flag to set
  c.data.modalities = BRATS_MODALITIES if opts.dataset == 'brats' else ()
  c.data.global_batch_size = opts.batch
  c.data.eval_batch_size = 8
  c.train.b1, c.train.b2 = 0.9, 0.999   # PyTorch Adam defaults (module docstring)
  c.train.stages = [config_lib.stage('dice', steps=STEPS, learning_rate=1e-4, loss='dice',
                                     milestones=(50_000, 75_000), gamma=0.5)]
  c.train.log_every = 100
  c.train.eval_every = 2000
  c.train.checkpoint_every = 2000
  c.eval.dataset = ''                   # Dice regions: '' = the shards' dataset (sample: oasis)
  c.segmentation = ml_collections.ConfigDict(dict(
      loss_classes=(),                  # DiceLoss classes; (): every class (smp's default)
      export_params='best'))            # 'best' validation Dice checkpoint, or 'final'
  if opts.demo:
    apply_demo(c)
  return c


def _int_tuple(key: str, text: str) -> tuple[int, ...]:
  """'64/128/256/512' -> (64, 128, 256, 512)."""
  try:
    return tuple(int(v) for v in str(text).split('/'))
  except ValueError:
    raise ValueError(f'{key} takes integers joined by "/", e.g. 64/128/256/512; got {text!r}'
                     ) from None


def apply_demo(c):
  """The embedded sample's whole slices and tissue labels, the reduced U-Net (docstring)."""
  c.data.source = 'sample'
  c.data.modalities = ()
  c.data.crop_hw = (160, 128)
  c.model.in_channels = 1
  c.train.stages = [config_lib.stage('dice', steps=200, learning_rate=2e-3, loss='dice',
                                     milestones=(100, 150), gamma=0.5)]
  c.train.log_every = 25
  c.train.eval_every = 50
  c.train.checkpoint_every = 50
  c.eval.dataset = 'oasis'
  return c
