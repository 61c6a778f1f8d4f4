"""Lesion-focused SR (LFSR, thesis ch. 3, §3.2.2, §3.4.2, Table 3.3): SRGAN trained on lesion ROIs,
against SRResNet and SRGAN trained on whole slices, at x2 / x4 with and without k-space noise.

  python -m data_prep.build --dataset=brats --protocol=msgan --src=/data/BraTS2018 --out=/data/shards/brats_msgan
  python -m medsr_jax.main --config=configs/lfsr.py --workdir=runs/lfsr_x4 \\
      --config.data.path=/data/shards/brats_msgan --config.train.frozen.vgg=weights/vgg19
  python -m medsr_jax.main --config=configs/lfsr.py:scale=2,sigma=20 --workdir=runs/lfsr_x2_s20 ...
  python -m medsr_jax.main --config=configs/lfsr.py:method=srgan,scale=2 --workdir=runs/srgan_x2 ...
  python -m experiments.sweep --config=configs/lfsr.py --workdir=runs/grid/lfsr     # Table 3.3
  python -m medsr_jax.main --config=configs/lfsr.py:demo --workdir=runs/lfsr_demo   # 2-core CPU

Options after the colon: `method=lfsr|srgan|srresnet`, `scale=2|4`, `sigma=0|20|40` (k-space
noise, raw MR units), `demo`.

Table 3.3's rows are runs of this file: every run's final table has the interpolation baselines
bilinear and bilinear + non-local-means denoising (B+NLD) beside the model, all scored on the
test ROIs (and on whole slices):
  lfsr      SRGAN with lesion-focused training: whole ROIs of `transforms.ROI_SIZES['brats']`
            (120 x 120) around each slice's lesion centre, no random patches (§3.3.1);
  srgan     the original SRGAN (configs/srgan.py) on random 96 x 96 patches of whole slices;
  srresnet  its MSE warm-up alone (trainer 'sr');
the whole-slice models super-resolve the whole LR slice and their output's ROI is scored, as the
thesis does ("only the ROIs are evaluated", §3.4.3). The SRGAN recipe is configs/srgan.py's (the
SRGAN paper's, since the thesis gives none): MSE pre-training, then MSE + 0.0061 VGG54 (after the
ReLU) + 1e-3 vanilla GAN, batch 16.

Noise (Table 3.3: "x2 (sigma = 20)", "x4 (sigma = 40)"; §3.4.2: additive white Gaussian noise
"in k-space of LR images"): `data.kspace_sigma` in the units of the original MR magnitudes,
added before the intensity division (data/lesion.py): with the unitary DFT and the magnitude
image it is Rician noise of that std in raw units, on the LR of training and of test inputs.

`demo`: LFSR at x4 on the embedded sample, whose CSF class stands in for the lesion
(`data.roi.lesion_labels=(1,)`), 64 x 64 ROIs (LR 16 x 16), configs/srgan.py's demo generator
and discriminator (a 6-block, 32-wide SRResNet without BatchNorm) and schedule (MSE warm-up, then
the GAN with the adversarial weight 1e-4); the table has bicubic, bilinear, B+NLD, the warm-up
generator and LFSR.
"""

import importlib.util
import pathlib

from medsr_jax import config_lib
from medsr_jax.data import transforms

METHODS = ('lfsr', 'srgan', 'srresnet')
SETTINGS = ((2, 0), (2, 20), (4, 0), (4, 40))   # Table 3.3 columns: (scale, sigma)
_SRGAN = pathlib.Path(__file__).resolve().parent / 'srgan.py'


def _srgan():
  spec = importlib.util.spec_from_file_location('srgan_config', _SRGAN)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(arg=None):
  opts = config_lib.parse_arg(arg, method='lfsr', scale=4, sigma=0.0, demo=False)
  if opts.method not in METHODS:
    raise ValueError(f'method must be one of {METHODS}, got {opts.method!r}')
  srgan = _srgan()
  c = srgan.get_config(f'scale={opts.scale}')
  c.data.source = 'brats_msgan'        # needs --config.data.path (data_prep --protocol=msgan)
  c.data.roi.size = transforms.ROI_SIZES['brats']
  c.data.roi.train = opts.method == 'lfsr'
  c.data.kspace_sigma = float(opts.sigma)
  c.data.eval_batch_size = 16
  if c.data.roi.train:
    c.gan.discriminator.kwargs.input_size = c.data.roi.size[0]
  if opts.demo:
    srgan.apply_demo(c)
    c.data.source = 'sample'
    c.data.roi.lesion_labels = (1,)    # stand-in lesion: CSF (the sample has no lesion)
    c.data.roi.size = (64, 64)
    c.gan.discriminator.kwargs.input_size = 64 if c.data.roi.train else c.data.lr_patch * opts.scale
    c.eval.num_panels = 3
    # 66 training ROIs: a shorter warm-up than srgan's demo (its validation PSNR peaks by then)
    c.train.stages[0].steps, c.train.stages[0].milestones = 1200, (800, 1000)
    c.train.stages[1].steps = 300
  c.eval.method_label = {'lfsr': 'LFSR', 'srgan': 'SRGAN', 'srresnet': 'SRResNet'}[opts.method]
  if opts.method == 'srresnet':
    c.trainer = 'sr'
    c.train.stages = [c.train.stages[0]]
    del c.gan
  return c


def sweep(add):
  """Table 3.3: every method at x2, x2 with sigma 20, x4 and x4 with sigma 40."""
  for method in METHODS:
    for scale, sigma in SETTINGS:
      add(config_arg=f'method={method},scale={scale},sigma={sigma}')
