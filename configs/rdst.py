"""RDST (thesis ch. 5): residual dense Swin transformer, x4, trained with L1 then fine-tuned with the
segmentation-based perceptual loss through a frozen U-Net.

  python -m medsr_jax.main --config=configs/unet_seg.py --workdir=runs/unet_oasis \\
      --config.data.path=/data/shards/oasis_rdst                        # the U-Net, first
  python -m medsr_jax.main --config=configs/rdst.py --workdir=runs/rdst \\
      --config.data.path=/data/shards/oasis_rdst --config.train.frozen.unet=runs/unet_oasis/export
  python -m medsr_jax.main --config=configs/rdst.py:demo --workdir=runs/demo   # 2-core CPU, < 10 min
  python -m experiments.sweep --config=configs/rdst.py --workdir=runs/grid/rdst   # Tables 5.6/5.7

Options after the colon (comma separated):
  loss=e1|e2|e3|e4|e5|esum|d|hrl|l1|vgg|wgan_gp   the fine-tuning loss (Table 5.6; default e1)
  stage=full|l1|finetune   both stages (default); the 100k L1 stage alone; the fine-tuning alone
                           (start it from an L1 run: --config.init_from=RUN)
  model=rdst|rdst_e|rdn|rcan|swinir_light   the generator (Fig. 5.11 fine-tunes RDN, RCAN and
                           SwinIR the same way); `blocks=N` RDSTBs; `scale=N`; `demo`.

Thesis settings (§5.2.2, §5.3.3): batch 32, LR patch 24 -> HR 96 at x4, Adam; stage 1: 100k steps
of L1 at 2e-4, no decay; stage 2: 20k steps from 1e-4 halved at 10k, 15k and 17.5k of
alpha L1 + lambda L_U (Eq. 5.14) with alpha = 0.1, lambda = 1 (the U-Net term weighted ten times
the L1 term, as the author's ini and run names; the text's alpha = 1, lambda = 10 is the same
ratio, docs/FIDELITY.md), L_U = L_E(1) (the first encoder block's features, L1 distance, U-Net in
inference mode). The U-Net is a `unet_seg` export trained on the same dataset
(configs/unet_seg.py; `--config.train.frozen.unet=DIR`). The rows of Table 5.6:
  e1..e5, esum, d, hrl   L_E(i), ΣE, L_D, L_HRL (losses/segmentation.py);
  l1                      "L̇1": 20k more L1 steps (the control for the extra training);
  vgg                     alpha L1 + 0.006 VGG22 (before the ReLU), the author's chapter-4 VGG term;
  wgan_gp                 alpha L1 + 0.006 VGG22 + 0.001 WGAN-GP (MIASSR's L_SR, `miassr_d`).
The code's loss variants are switches of `config.train.unet_loss` (criterion='mse' for its
'encoder-L1', bn='train', layer_division=True, classes=(1, 2, 3) for 'lesion_only').
Cross-dataset U-Nets (Table 5.10): pass another dataset's U-Net export as train.frozen.unet.

`demo`: a reduced U-Net is trained first on the embedded sample's tissue labels
(`configs/unet_seg.py:demo`, a prerequisite run in `runs/demo/prerequisites/unet/`, skipped when
`--config.train.frozen.unet` is given), then one RDSTB of width 30 on 16 -> 64 patches (batch 8):
an L1 stage with a short warm-up to 1.5e-3, then an L_E(1) fine-tuning stage; the table has
bicubic, the L1 stage and the fine-tuned model with PSNR, SSIM and Dice.
"""

from medsr_jax import config_lib

FINETUNE_LOSSES = ('e1', 'e2', 'e3', 'e4', 'e5', 'esum', 'd', 'hrl', 'l1', 'vgg', 'wgan_gp')
STAGES = ('full', 'l1', 'finetune')
GENERATORS = ('rdst', 'rdst_e', 'rdn', 'rcan', 'swinir_light')
ALPHA, LAMBDA = 0.1, 1.0        # Eq. 5.14 as the author's ini (thesis text: 1 and 10)
VGG_WEIGHT, ADV_WEIGHT = 0.006, 0.001  # MIASSR's (thesis §4.3.3)


def finetune_losses(loss: str) -> dict:
  """{term: weight} of the fine-tuning stage for the option `loss=`."""
  if loss not in FINETUNE_LOSSES:
    raise ValueError(f'loss must be one of {FINETUNE_LOSSES}, got {loss!r}')
  if loss == 'l1':
    return {'l1': 1.0}
  if loss == 'vgg':
    return {'l1': ALPHA, 'vgg22': VGG_WEIGHT}
  if loss == 'wgan_gp':
    return {'l1': ALPHA, 'vgg22': VGG_WEIGHT, 'adv': ADV_WEIGHT}
  return {'l1': ALPHA, f'unet_{loss}': LAMBDA}


def get_config(arg=None):
  return make_config(arg, model_name="rdst", blocks=8)


def make_config(arg, *, model_name, blocks):
  """The chapter-5 protocol for an RDST variant with `blocks` RDSTBs (8: RDST, 4: RDST-E)."""
  opts = config_lib.parse_arg(arg, demo=False, scale=4, blocks=blocks, loss='e1', stage='full',
                              model=model_name)
  if opts.stage not in STAGES:
    raise ValueError(f'stage must be one of {STAGES}, got {opts.stage!r}')
  if opts.model not in GENERATORS:
    raise ValueError(f'model must be one of {GENERATORS}, got {opts.model!r}')
  c = config_lib.base_sr_config()
  if opts.model in ('rdst', 'rdst_e'):
    c.model = config_lib.model_config(opts.model, scale=opts.scale,
                                      num_blocks=opts.blocks if opts.model == model_name
                                      else {'rdst': 8, 'rdst_e': 4}[opts.model])
  else:
    c.model = config_lib.model_config(opts.model, scale=opts.scale)
  l1 = config_lib.stage("l1", steps=100_000, learning_rate=2e-4)
  finetune = config_lib.stage("finetune", steps=20_000, learning_rate=1e-4,
                              losses=finetune_losses(opts.loss),
                              milestones=(10_000, 15_000, 17_500), gamma=0.5)
  c.train.stages = {'full': [l1, finetune], 'l1': [l1], 'finetune': [finetune]}[opts.stage]
  if opts.loss == 'wgan_gp' and opts.stage != 'l1':
    c.trainer = 'gan'
    c.gan = _wgan_gp_section(c.data.lr_patch * opts.scale)
  c.eval.method_label = opts.model
  if opts.demo:
    apply_demo(c)
  return c


def _wgan_gp_section(hr_size: int):
  """MIASSR's critic set-up (configs/miassr.py) for the WGAN-GP row."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  import pathlib  # pylint: disable=import-outside-toplevel
  spec = importlib.util.spec_from_file_location(
      "configs_miassr", pathlib.Path(__file__).with_name("miassr.py"))
  miassr = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(miassr)
  return miassr.gan_section('wgan_gp', hr_size, 1)


def apply_demo(c):
  """The same pipeline, small enough for a 2-core CPU in under ten minutes (module docstring)."""
  if c.model.name in ('rdst', 'rdst_e'):
    c.model.kwargs.num_blocks = 1
    c.model.kwargs.embed_dim = 30
    c.model.kwargs.growth_rate = 12
    c.model.kwargs.num_heads = 6
  c.data.global_batch_size = 8
  c.data.lr_patch = 16
  stages = []
  for s in c.train.stages:
    if s.name == 'l1':
      stages.append(config_lib.stage("l1", steps=1600, learning_rate=1.5e-3, warmup_steps=100,
                                     milestones=(1000, 1300), gamma=0.5))
    else:
      stages.append(config_lib.stage("finetune", steps=300, learning_rate=2e-4,
                                     losses=dict(s.losses), milestones=(150, 225), gamma=0.5))
  c.train.stages = stages
  if 'gan' in c:
    c.gan.discriminator.kwargs.input_size = c.data.lr_patch * c.model.scale
  if any(set(s.losses) & {'vgg22', 'vgg54'} for s in stages):
    c.demo_without_vgg = True        # the VGG weight becomes 0 when no VGG export is given
  c.prerequisites = {'unet': 'configs/unet_seg.py:demo'}
  c.train.log_every = 100
  c.train.eval_every = 400
  c.train.checkpoint_every = 400
  return c


def sweep(add):
  """Table 5.6's fine-tuning losses from one shared L1 run, Fig. 5.11's other generators, and
  the RDSTB ablation; `{grid}` is the grid's directory. Pass the U-Net with
  `python -m experiments.sweep ... -- --config.train.frozen.unet=DIR` (README)."""
  l1 = '{grid}/stage=l1'
  add(config_arg='stage=l1')
  for loss in FINETUNE_LOSSES:
    add(config_arg=f'stage=finetune,loss={loss}', init_from=l1)
  for model in ('rdn', 'rcan', 'swinir_light'):
    add(config_arg=f'stage=l1,model={model}')
    for loss in ('l1', 'e1', 'hrl'):
      add(config_arg=f'stage=finetune,model={model},loss={loss}',
          init_from=f'{{grid}}/stage=l1,model={model}')
  add(config_arg='stage=l1,blocks=4')                     # 4 RDSTBs (RDST-E's depth)
