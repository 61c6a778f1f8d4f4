"""Training regimes, by config name: `trainers.get(config.trainer)` (imported lazily).

  'sr'   fixed-scale pixel (+ VGG) training            trainers/sr.py
  'gan'  generator + discriminator, WGAN-GP and kin      trainers/gan.py
  'detector'  the lesion detector of chapter 3 (ROI centre regression)  trainers/detector.py
  'arbitrary_scale'  MIASSR / Meta-* models, one scale per batch (chapter 4)
                                                         trainers/arbitrary_scale.py
  'segmentation'  the U-Net of the chapter-5 perceptual losses (Dice loss)  trainers/segmentation.py

Each module defines `Trainer`, a class the shared loop (`trainers/loop.py`) drives. Add a regime
by writing `trainers/<name>.py` with a `Trainer` (usually a subclass of `sr.SRTrainer`) and
listing it here.
"""

from __future__ import annotations

import importlib

from medsr_jax.errors import InputError

_MODULES = {"sr": "medsr_jax.trainers.sr", "gan": "medsr_jax.trainers.gan",
            "detector": "medsr_jax.trainers.detector",
            "segmentation": "medsr_jax.trainers.segmentation",
            "arbitrary_scale": "medsr_jax.trainers.arbitrary_scale"}


def available() -> list[str]:
  return sorted(_MODULES)


def get(name: str):
  """The `Trainer` class of regime `name`; InputError for an unknown name."""
  if name not in _MODULES:
    raise InputError(f"unknown trainer {name!r}; known: {', '.join(available())}")
  return importlib.import_module(_MODULES[name]).Trainer
