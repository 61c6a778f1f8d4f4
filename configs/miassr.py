"""MIASSR (thesis ch. 4): arbitrary-scale SR in (1, 4] with an EDSR-lite feature extractor and the
meta-upscale module, L1 warm-up then L1 + VGG22 + WGAN-GP, trained by `trainers/arbitrary_scale.py`.

  python -m data_prep.build --dataset=oasis --protocol=miassr --src=/data/OASIS --out=/data/shards/oasis_miassr
  python -m medsr_jax.main --config=configs/miassr.py --workdir=runs/miassr \\
      --config.data.path=/data/shards/oasis_miassr --config.train.frozen.vgg=weights/vgg19
  python -m medsr_jax.main --config=configs/miassr.py:demo --workdir=runs/miassr_demo   # 2-core CPU
  python -m medsr_jax.evaluate --workdir=runs/miassr --scales=1.1:4.0:0.1       # Figs 4.4/4.5
  python -m experiments.sweep --config=configs/miassr.py --workdir=runs/grid/miassr   # ablations

The thesis recipe (§4.3.3; reference spec §2.2, §4.3, §5.11, §7.4), the default:
  * data: the OASIS slices of the MIASSR protocol (180 x 144, data_prep `--protocol=miassr`), one
    scale per batch from the 30 scales 1.1..4.0, HR patch 96 (LR int(96 / s), HR int(LR * s)),
    LR = bicubic then the 3x3 Gaussian blur, batch 16;
  * generator: 'miassr' (EDSR-lite: w = 64 features, b = 16 residual blocks, LeakyReLU 0.2, no BN;
    meta-upscale), Adam betas (0.9, 0.999), lr 1e-4 halved every 5e4 steps over the whole run;
  * stage 1 'warmup': 1e5 steps of L1; stage 2 'gan': 1e5 steps of
    lambda L1 + eta VGG22 + gamma adversarial with lambda = 1, eta = 0.006 (VGG-19 conv2_2 before
    the ReLU, per-modality mean for multi-channel input) and gamma = 0.001;
  * adversarial loss: WGAN-GP (the thesis' choice, Fig. 4.10) with the thesis' critic
    (`miassr_d`: SRGAN-style, 7 down-sampling convs, LeakyReLU 0.2, no BN) and the reference's
    critic optimiser for GP kinds, Adam(1e-5, betas (0, 0.9)) (the generator's for the others);
    `code_gan` is what the published ini trains (spec §7.4's trap: its loss key says ScaleGAN
    but gan_type='GAN' runs the vanilla BCE GAN, with BN in D (`srgan_d`) and the generator's
    optimiser); `gan=scalegan` is the code's scale-label loss itself;
  * evaluation at the six test scales 1.5, 2, ..., 4 (§4.4; `python -m medsr_jax.evaluate`
    for any other scale list).
The one learning-rate schedule over both stages: stage 2 starts at the rate stage 1 ended with
(2.5e-5) and halves at its own 5e4th step, so every step has the reference's never-reset
MultiStepLR rate (spec §3.2); the Adam moments restart with the GAN stage (docs/FIDELITY.md).

Options after the colon (comma separated):
  stage=full|warmup|gan   both stages (default); the L1 warm-up alone; the GAN stage alone
                          (start it from a warm-up with --config.init_from=RUN: the loss ablations
                          branch from one shared warm-up, §4.4.3)
  model=miassr|meta_srresnet|meta_edsr|meta_srdensenet|meta_rdn|meta_esrgan|meta_mdsr (Fig. 4.8)
  w=64, b=16              EDSR-lite width and depth (Tables 4.3, 4.4; miassr only)
  eta=0.006, gamma=0.001  perceptual and adversarial weights (Tables 4.5, 4.6); 'inf' = that term
                          alone (no L1, no other term), 0 = without it
  gan=wgan_gp|vanilla|ragan|wgan|scalegan   the adversarial loss (Fig. 4.10)
  code_gan                the published ini's adversarial set-up (vanilla GAN, D with BN)
  transfer                fine-tune a pre-trained model on another dataset: the full loss for 1e4
                          steps (§4.3.3); give --config.init_from=RUN and --config.data.path;
                          add --config.train.freeze=feature_extractor to fix the feature extractor
  multimodal              BraTS with the four modalities stacked (T1ce, T1, T2, FLAIR: 4-channel
                          input and output, Fig. 4.7); the VGG loss averaged over the modalities
                          (`--config.train.perceptual.channel_reduce=sum`: the code's sum)
  demo                    the embedded sample on a 2-core CPU in under 10 minutes (below)

`demo`: a 32-wide, 4-block EDSR-lite on 16 -> 64 patches (batch 8) of the embedded sample,
trained at the six test scales only (bounding compilation to 6 steps per stage), 1,500 L1 steps
then 300 steps of L1 + WGAN-GP with gamma lowered to 1e-4 (the demo has no VGG term unless a VGG
export is given: with L1 as its only content loss, 1e-3 lets the critic's term dominate), a narrow
critic; it prints bicubic vs MIASSR at scales 1.5, 2, 2.5, 3, 3.5 and 4.

The grid (`sweep`, `python -m experiments.sweep`): the warm-up run, then every ablation of §4.4
as its own point — widths (Table 4.3), depths (Table 4.4), eta (Table 4.5) and gamma (Table 4.6)
and the GAN variants (Fig. 4.10) as GAN stages branching from the shared warm-up (`{grid}` is the
grid's directory), the feature extractors trained with L1 (Fig. 4.8) and the L1-only vs
+adversarial+perceptual comparison of EDSR-lite, EDSR and RDN (Fig. 4.9).
"""

import math

from medsr_jax import config_lib
from medsr_jax.data import arbitrary_scale
from medsr_jax.losses import adversarial

BATCH = 16
WARMUP_STEPS = GAN_STEPS = 100_000        # §4.3.3
TRANSFER_STEPS = 10_000                   # §4.3.3: fine-tuning on ACDC / COVID-CT
LEARNING_RATE, HALVE_EVERY = 1e-4, 50_000
ETA, GAMMA = 0.006, 0.001                 # §4.3.3 (lambda = 1)
DEMO_GAMMA = 1e-4
MODELS = ('miassr', 'meta_srresnet', 'meta_edsr', 'meta_srdensenet', 'meta_rdn', 'meta_esrgan',
          'meta_mdsr')
GAN_KINDS = ('wgan_gp', 'vanilla', 'ragan', 'wgan', 'scalegan')
STAGES = ('full', 'warmup', 'gan')
BRATS_MODALITIES = ('t1ce', 't1', 't2', 'flair')  # the thesis' order (§4.3.3)


def _weight(value) -> float:
  """A loss weight option: a number or 'inf' (that term alone)."""
  return math.inf if str(value).lower() in ('inf', 'infinity') else float(value)


def gan_losses(eta, gamma) -> dict:
  """{term: weight} of the GAN stage: lambda L1 + eta VGG22 + gamma adv; 'inf' keeps one term."""
  eta, gamma = _weight(eta), _weight(gamma)
  if math.isinf(eta) and math.isinf(gamma):
    raise ValueError('eta and gamma cannot both be inf')
  if math.isinf(eta):
    return {'vgg22': 1.0}
  if math.isinf(gamma):
    return {'adv': 1.0}
  return {k: v for k, v in {'l1': 1.0, 'vgg22': eta, 'adv': gamma}.items() if v}


def gan_section(kind: str, hr_size: int, in_channels: int, *, batch_norm: bool = False):
  """`config.gan`: the thesis' no-BN critic `miassr_d` (`batch_norm`: the code's `srgan_d`);
  GP kinds train it with Adam(1e-5, (0, 0.9)), the others with the generator's optimiser, as the
  reference (spec §7.4)."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  if kind not in GAN_KINDS:
    raise ValueError(f'gan must be one of {GAN_KINDS}, got {kind!r}')
  d_name = 'srgan_d' if batch_norm else 'miassr_d'
  return ml_collections.ConfigDict(dict(
      kind=kind, n_critic=1, gp_weight=adversarial.GP_WEIGHT, d_optimizer='auto',
      d_learning_rate=1e-5, d_b1=0.0, d_b2=0.9,
      discriminator=config_lib.model_config(d_name, input_size=hr_size,
                                            in_channels=in_channels)))


def get_config(arg=None):
  opts = config_lib.parse_arg(arg, stage='full', model='miassr', w=64, b=16, eta=str(ETA),
                              gamma=str(GAMMA), gan='wgan_gp', code_gan=False, transfer=False,
                              multimodal=False, demo=False)
  if opts.stage not in STAGES:
    raise ValueError(f'stage must be one of {STAGES}, got {opts.stage!r}')
  if opts.model not in MODELS:
    raise ValueError(f'model must be one of {MODELS}, got {opts.model!r}')
  c = config_lib.base_sr_config()
  c.trainer = 'arbitrary_scale'
  channels = len(BRATS_MODALITIES) if opts.multimodal else 1
  features = {'n_feats': int(opts.w), 'n_resblocks': int(opts.b)} if opts.model == 'miassr' else {}
  c.model = config_lib.model_config(opts.model, scale=4.0, in_channels=channels,
                                    feature_options=tuple(sorted(features.items())))
  c.data.source = 'brats_miassr' if opts.multimodal else 'oasis_miassr'  # needs data.path
  c.data.modalities = BRATS_MODALITIES if opts.multimodal else ()
  c.data.crop_hw = (180, 144)        # the sample's crop when no shards are given (§4.3.1)
  c.data.scales = arbitrary_scale.THESIS_SCALES
  c.data.lr_patch = 24               # HR patch int(24 * 4.0) = 96
  c.data.blur = True
  c.data.global_batch_size = BATCH
  c.train.b2 = 0.999
  c.train.perceptual.after_relu = False   # VGG22 before the ReLU (reference §7.2)
  c.train.perceptual.channel_reduce = 'mean'
  c.eval.scales = arbitrary_scale.TEST_SCALES
  c.eval.method_label = 'MIASSR' if opts.model == 'miassr' else opts.model
  c.train.eval_every = 5000
  c.train.checkpoint_every = 5000
  c.train.log_every = 100
  losses = gan_losses(opts.eta, opts.gamma)
  warmup = config_lib.stage('warmup', steps=WARMUP_STEPS, learning_rate=LEARNING_RATE,
                            loss='l1', milestones=(HALVE_EVERY,))
  second_rate = LEARNING_RATE * 0.5 ** (WARMUP_STEPS // HALVE_EVERY)
  gan_stage = config_lib.stage('gan', steps=GAN_STEPS, learning_rate=second_rate, losses=losses,
                               milestones=(HALVE_EVERY,))
  if opts.transfer:
    c.train.stages = [config_lib.stage('transfer', steps=TRANSFER_STEPS,
                                       learning_rate=LEARNING_RATE, losses=losses)]
  elif opts.stage == 'warmup':
    c.train.stages = [warmup]
  elif opts.stage == 'gan':
    c.train.stages = [gan_stage]
  else:
    c.train.stages = [warmup, gan_stage]
  if any('adv' in s.losses for s in c.train.stages):
    kind = 'vanilla' if opts.code_gan else opts.gan
    c.gan = gan_section(kind, arbitrary_scale.HR_PATCH, channels, batch_norm=opts.code_gan)
  if opts.demo:
    apply_demo(c)
  return c


def apply_demo(c):
  """The embedded sample on a 2-core CPU in under 10 minutes (module docstring)."""
  c.data.source = 'sample'
  c.data.crop_hw = (160, 128)
  c.data.scales = arbitrary_scale.TEST_SCALES
  c.data.lr_patch = 16               # HR patch 64
  c.data.global_batch_size = 8
  c.model.kwargs.feature_options = (('n_feats', 32), ('n_resblocks', 4))
  stages = []
  for s in c.train.stages:
    if s.name == 'warmup':
      stages.append(config_lib.stage('warmup', steps=1500, learning_rate=1e-3, loss='l1',
                                     warmup_steps=100, milestones=(1000, 1300)))
    else:
      losses = dict(s.losses)
      if losses.get('adv', 0) and len(losses) > 1:
        losses['adv'] = DEMO_GAMMA
      stages.append(config_lib.stage(s.name, steps=300, learning_rate=1e-4, losses=losses))
  c.train.stages = stages
  if 'gan' in c:
    c.gan.discriminator = config_lib.model_config(
        c.gan.discriminator.name, input_size=64, in_channels=c.model.in_channels,
        widths=(16, 16, 32, 32, 64, 64, 128, 128), fc_features=128)
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  c.eval.num_panels = 1
  c.demo_without_vgg = True          # the VGG weight becomes 0 when no VGG export is given
  return c


def sweep(add):
  """The ablations of §4.4 (module docstring); `{grid}` is the grid's own directory."""
  warmup = '{grid}/stage=warmup'
  add(config_arg='stage=warmup')
  add(config_arg='stage=full')                            # MIASSR (w = 64, b = 16, WGAN-GP)
  for w in (4, 8, 16, 32, 128):                           # Table 4.3 (64 is the default run)
    add(config_arg=f'w={w}')
  for b in (2, 4, 8, 32, 64):                             # Table 4.4
    add(config_arg=f'b={b}')
  add(config_arg='stage=gan', init_from=warmup)           # eta = 0.006, gamma = 0.001, WGAN-GP
  for eta in ('0', '0.01', '0.1', '1', 'inf'):            # Table 4.5
    add(config_arg=f'stage=gan,eta={eta}', init_from=warmup)
  for gamma in ('0', '0.01', '0.1', '1', 'inf'):          # Table 4.6
    add(config_arg=f'stage=gan,gamma={gamma}', init_from=warmup)
  for kind in ('vanilla', 'ragan', 'wgan'):               # Fig. 4.10
    add(config_arg=f'stage=gan,gan={kind}', init_from=warmup)
  add(config_arg='stage=gan,code_gan', init_from=warmup)  # the published ini's GAN
  for model in MODELS[1:]:                                # Fig. 4.8 (L1 only)
    add(config_arg=f'stage=warmup,model={model}')
  for model in ('meta_edsr', 'meta_rdn'):                 # Fig. 4.9 (+ miassr above)
    add(config_arg=f'stage=gan,model={model}', init_from=f'{{grid}}/stage=warmup,model={model}')
