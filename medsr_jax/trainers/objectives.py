"""The generator objective of a stage: a weighted sum of named loss terms from the config.

A stage names its terms and weights (`config_lib.stage(..., losses={'mse': 1, 'vgg54': 0.006,
'adv': 0.001})`; the older `loss='l1'` is the shorthand for `{'l1': 1.0}`):

  'l1', 'mse' ('l2')   pixel losses against the HR patch (losses/pixel.py, spec §7.1)
  'mse_x2'             MSE of a multi-scale generator's intermediate x2 image against the HR
                       downsampled x2 (batch 'hr2'; thesis eq. 3.21, alpha); every other term
                       reaches only the final image, so the adversarial and VGG terms act on
                       the x4 output alone, as the thesis prescribes (§3.2.4)
  'vgg22', 'vgg54'     VGG-19 feature MSE (losses/perceptual.py, spec §7.2); needs the frozen
                       'vgg' network (`--config.train.frozen.vgg=EXPORT_DIR`) and takes
                       `config.train.perceptual` (after_relu, channel_reduce, normalize)
  'adv'                the generator's adversarial loss against the current discriminator
                       (losses/adversarial.py; GAN trainer only)
  'unet_e1'..'unet_e5', 'unet_esum', 'unet_d', 'unet_hrl'
                       the segmentation perceptual losses L_E(i), ΣE, L_D and L_HRL (thesis
                       Eqs. 5.10-5.12, losses/segmentation.py) through the frozen 'unet'
                       (`--config.train.frozen.unet=EXPORT_DIR` of a trained `unet_seg`); they
                       take `config.train.unet_loss` (criterion, bn, layer_division, classes)

Terms with weight 0 are left out of the program entirely. Every term is also reported on its
own (`loss_<term>`, unweighted) next to the total `loss`.

Run `python -m pytest tests/test_gan.py`.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from medsr_jax.errors import InputError
from medsr_jax.losses import perceptual, pixel, segmentation
from medsr_jax.trainers import step as step_lib

PIXEL_TERMS = ("l1", "mse", "l2")
INTERMEDIATE_TERM = "mse_x2"  # multi-scale generators only (ms_srresnet, ms_gan)
PERCEPTUAL_TERMS = ("vgg22", "vgg54")
ADVERSARIAL_TERM = "adv"
UNET_MODES = {"unet_e1": "e1", "unet_e2": "e2", "unet_e3": "e3", "unet_e4": "e4",
              "unet_e5": "e5", "unet_esum": "e_sum", "unet_d": "d", "unet_hrl": "hrl"}
UNET_TERMS = tuple(UNET_MODES)
VGG = "vgg"  # key of the VGG-19 variables in the step's `frozen` argument
UNET = "unet"  # key of the segmentation U-Net's variables in `frozen`

# critic(images) -> (N, 1) logits of the current discriminator; given by the GAN step.
Critic = Callable[[jax.Array], jax.Array]
AdversarialLoss = Callable[[jax.Array, jax.Array], jax.Array]  # (d_real, d_fake) -> G loss


def stage_terms(stage) -> dict[str, float]:
  """{term: weight} of a stage with non-zero weights (`losses`, or `{loss: 1}`)."""
  losses = stage.get("losses", None)
  terms = dict(losses.to_dict() if hasattr(losses, "to_dict") else (losses or {}))
  if not terms:
    terms = {stage.loss: 1.0}
  return {str(k).lower(): float(v) for k, v in terms.items() if float(v) != 0.0}


def check_terms(stages, allowed: tuple[str, ...], trainer: str) -> None:
  """InputError for a term this trainer cannot compute."""
  for s in stages:
    unknown = sorted(set(stage_terms(s)) - set(allowed))
    if unknown:
      raise InputError(f"stage {s.name!r} uses loss terms {unknown}, which trainer {trainer!r} "
                       f"does not compute; known: {sorted(allowed)}")


def needs_intermediate(stages) -> bool:
  """True when a stage trains the intermediate x2 output (the batch then carries 'hr2')."""
  return any(INTERMEDIATE_TERM in stage_terms(s) for s in stages)


def needs_vgg(stages) -> bool:
  return any(set(stage_terms(s)) & set(PERCEPTUAL_TERMS) for s in stages)


def needs_unet(stages) -> bool:
  return any(set(stage_terms(s)) & set(UNET_TERMS) for s in stages)


def unet_loss_options(options: Any) -> dict:
  """`config.train.unet_loss` as keyword arguments of `segmentation.unet_perceptual_loss`."""
  options = dict(options.to_dict() if hasattr(options, "to_dict") else (options or {}))
  classes = tuple(int(c) for c in options.pop("classes", ()) or ())
  return {**options, "classes": classes or None}


def output_loss(terms: dict[str, float], perceptual_options: Optional[dict] = None,
                adversarial_loss: Optional[AdversarialLoss] = None,
                unet_options: Optional[dict] = None):
  """`loss(sr, batch, frozen, critic=None) -> (total, aux)`: the weighted terms of a generator
  output `sr`. `aux` holds every unweighted term (`loss_<term>`). 'adv' needs `critic` and
  `adversarial_loss(d_real, d_fake)`; the real branch is D(HR) under `stop_gradient`.
  `sr` is one image, or a multi-scale generator's tuple (x2, ..., final): 'mse_x2' compares its
  first image with batch['hr2'], every other term sees only the final image.
  """
  perceptual_options = dict(perceptual_options or {})
  unet_options = unet_loss_options(unet_options)

  def loss(outputs, batch, frozen=None, critic: Optional[Critic] = None):
    hr = batch["hr"]
    sr = outputs[-1] if isinstance(outputs, (tuple, list)) else outputs
    values = {}
    for term in terms:
      if term == INTERMEDIATE_TERM:
        if not isinstance(outputs, (tuple, list)) or len(outputs) < 2:
          raise ValueError("the 'mse_x2' term needs a multi-scale generator's outputs")
        values[term] = pixel.mse(outputs[0], batch["hr2"])
      elif term in PIXEL_TERMS:
        values[term] = pixel.get(term)(sr, hr)
      elif term in PERCEPTUAL_TERMS:
        values[term] = perceptual.vgg_loss((frozen or {})[VGG], sr, hr, layer=term,
                                           **perceptual_options)
      elif term in UNET_TERMS:
        values[term] = segmentation.unet_perceptual_loss(
            (frozen or {})[UNET], sr, hr, UNET_MODES[term], **unet_options)
      elif term == ADVERSARIAL_TERM:
        if critic is None or adversarial_loss is None:
          raise ValueError("the 'adv' term needs the GAN trainer's critic")
        d_real = jax.lax.stop_gradient(critic(hr))
        values[term] = adversarial_loss(d_real, critic(sr))
      else:
        raise ValueError(f"unknown loss term {term!r}")
    total = sum(jnp.asarray(terms[t], jnp.float32) * v for t, v in values.items())
    return total, {f"loss_{t}": v for t, v in values.items()}

  return loss


def generator_objective(model, terms: dict[str, float], perceptual_options: Optional[dict] = None,
                        adversarial_loss: Optional[AdversarialLoss] = None, *,
                        scale: Optional[float] = None, unet_options: Optional[dict] = None):
  """`objective(params, model_state, batch, rng, frozen, critic=None) -> (loss, (aux, state))`:
  the model's training forward pass (at the static `scale` for scale-taking models; default
  their own) followed by `output_loss`."""
  forward = step_lib.model_forward(model, scale=scale, all_outputs=INTERMEDIATE_TERM in terms)
  loss = output_loss(terms, perceptual_options, adversarial_loss, unet_options)

  def objective(params, model_state, batch, rng, frozen=None, critic: Optional[Critic] = None):
    sr, new_model_state = forward(params, model_state, batch["lr"], rng)
    total, aux = loss(sr, batch, frozen, critic)
    return total, (aux, new_model_state)

  return objective


def load_frozen(config, stages) -> dict[str, Any]:
  """The frozen networks' variables a run needs, from `config.train.frozen` export dirs."""
  from medsr_jax import export  # pylint: disable=import-outside-toplevel
  frozen = {}
  slots = config.train.get("frozen", {})
  directory = slots.get(VGG, "")
  if needs_vgg(stages):
    if not directory:
      raise InputError("a stage uses a VGG loss: convert torchvision's VGG-19 once with "
                       "`python -m medsr_jax.export --model=vgg19 --from_torch=vgg19-dcbb9e9d.pth "
                       "--out=DIR` and pass --config.train.frozen.vgg=DIR")
    _, variables, _ = export.load_export(directory)
    frozen[VGG] = variables
  if needs_unet(stages):
    directory = slots.get(UNET, "")
    if not directory:
      raise InputError("a stage uses a segmentation perceptual loss: train the U-Net first "
                       "(`python -m medsr_jax.main --config=configs/unet_seg.py ...`) and pass "
                       "--config.train.frozen.unet=RUN/export")
    _, variables, unet_config = export.load_export(directory)
    if unet_config["model"] != "unet_seg":
      raise InputError(f"train.frozen.unet {directory} holds {unet_config['model']!r}, not a "
                       "'unet_seg' export")
    if int(unet_config["in_channels"]) != int(config.model.in_channels):
      raise InputError(f"the U-Net in {directory} takes {unet_config['in_channels']} channel(s); "
                       f"the SR model has {config.model.in_channels}")
    frozen[UNET] = variables
  return frozen
