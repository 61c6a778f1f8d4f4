"""Lesion detector LD (thesis §3.2.2, §3.3.3, Table 3.2), trained by `trainers/detector.py`.

  python -m medsr_jax.main --config=configs/lesion_detector.py --workdir=runs/ld \\
      --config.data.path=SHARDS                  # data_prep chapter-3 BraTS shards (T1ce, labels)
  python -m medsr_jax.main --config=configs/lesion_detector.py:demo --workdir=runs/ld_demo
  python -m medsr_jax.detect --model_dir=runs/ld/export --data=SHARDS --out=centres.csv --scale=4

Options after the colon: `demo`, `tiny` (a minimal network for tests), `epochs=N`,
`batch=N`, `eval_scale=S`.

The thesis recipe:
  * network: 'lesion_detector' at the thesis widths (32, 64, 128, 128, 128), FC (1024, 128, 2),
    resize head to 256 x 256 (the 240 x 240 BraTS slices rounded up to a multiple of 32);
  * data: BraTS T1ce slices with tumour (the whole tumour: every label > 0, "by fusing all the
    labels", §3.3.1); ROI 120 x 120 (the size its accuracy levels are measured with);
  * 50 epochs (§3.3.3) of Adam, lr 1e-3, betas (0.9, 0.999); L2 loss on the centre (eq. 3.8).
    The thesis gives no batch size: 16 here (the SRGAN batch of the chapter's GANs). Steps =
    epochs * ceil(N_train / batch), N_train = the training slices with lesion pixels, counted
    by the trainer at start-up (`detector.epochs`); for the thesis' 9,559 training slices that
    is 50 * ceil(9559 / 16) = 50 * 598 = 29,900 steps. Validation at x4 (`detector.eval_scale`:
    LR = bicubic / 4 of the HR slice) once per ~epoch; the test table reports x2 and x4.

`demo` (the embedded Colin27 sample, 2-core CPU, about a minute): a healthy brain has no lesion,
so its CSF class (label 1) stands in for one (`data.roi.lesion_labels=(1,)`); CSF lies all
around the brain, so even a box around the true centroid covers only part of it (the table's
reference row) and every slice is 'bad' at the 64 x 64 ROI: the demo shows the pipeline and the
centre error, not the thesis' accuracy. Detector: input 64 x 64, widths (8, 16, 32, 32, 32),
FC (64, 32); 93 training slices (160 x 128), batch 16, 60 epochs = 360 steps.
"""

import ml_collections

from medsr_jax import config_lib

THESIS_EPOCHS = 50
BATCH = 16
BRATS_TRAIN_SLICES = 9559  # thesis §3.3.1: 29,900 steps at batch 16


def get_config(arg=None):
  opts = config_lib.parse_arg(arg, demo=False, tiny=False, epochs=THESIS_EPOCHS, batch=BATCH,
                              eval_scale=4.0)
  c = config_lib.base_sr_config()
  c.trainer = 'detector'
  c.model = config_lib.model_config('lesion_detector', scale=1)  # thesis widths and FC
  c.data.global_batch_size = opts.batch
  c.data.modalities = ('t1ce',)        # BraTS: T1ce only (§3.3.1)
  c.data.roi.size = (120, 120)          # BraTS ROI (§3.3.1)
  c.data.roi.lesion_labels = ()         # the whole tumour: every label > 0
  c.data.eval_batch_size = 16
  c.train.b1, c.train.b2 = 0.9, 0.999   # §3.3.3
  # Steps of this stage: detector.epochs * ceil(N_train / batch), set by the trainer.
  c.train.stages = [config_lib.stage(
      'l2', steps=THESIS_EPOCHS * -(-BRATS_TRAIN_SLICES // BATCH), learning_rate=1e-3,
      loss='mse')]
  c.train.log_every = 100
  c.train.eval_every = 600
  c.train.checkpoint_every = 600
  c.detector = ml_collections.ConfigDict(dict(
      epochs=opts.epochs,               # 0: train.stages' step counts as given
      eval_scale=opts.eval_scale,       # validation on bicubic LR / s (1: the HR slice)
      test_scales=(2.0, 4.0)))          # rows of the test table (Table 3.2: x2, x4)
  if opts.demo:
    apply_demo(c, epochs=opts.epochs if opts.epochs != THESIS_EPOCHS else 60)
  if opts.tiny:
    apply_tiny(c)
  return c


def apply_demo(c, *, epochs: int):
  """The embedded sample with CSF as the stand-in lesion, a small detector (module docstring)."""
  c.data.modalities = ()
  c.data.roi.size = (64, 64)
  c.data.roi.lesion_labels = (1,)      # CSF of the tissue labels stands in for a lesion
  c.model = config_lib.model_config('lesion_detector', scale=1, input_size=64,
                                    widths=(8, 16, 32, 32, 32), fc_features=(64, 32))
  c.detector.epochs = epochs
  c.train.log_every = 30
  c.train.eval_every = 60
  c.train.checkpoint_every = 120
  c.mesh.shape = (1, 1)
  return c


def apply_tiny(c):
  """A minimal detector (2 levels, 16 x 16 input) for tests; the data come from data.path."""
  c.data.modalities = ()
  c.model = config_lib.model_config('lesion_detector', scale=1, input_size=16, widths=(4, 8),
                                    fc_features=(16,))
  c.train.log_every = 10
  c.train.eval_every = 50
  c.train.checkpoint_every = 50
  c.mesh.shape = (1, 1)
  return c
