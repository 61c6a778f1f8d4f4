"""Adversarial losses (reference spec §7.4): the discriminator and generator objectives of every
GAN variant in the dissertation's code and papers, and the WGAN-GP gradient penalty.

Every loss is a pure function of the discriminator's outputs on a real and a fake batch, `d_real`
and `d_fake` (logits or critic values, usually (N, 1)), and is a mean over the batch. The trainer
evaluates the discriminator itself, so the same functions serve any discriminator and any step
(D step on the detached fake batch, G step on the live one). Kinds:

  'vanilla'   D: BCE(D(f), 0) + BCE(D(r), 1);  G: BCE(D(f), 1) (non-saturating), BCE with logits
  'ragan'     relativistic average GAN (ESRGAN): D(f) - mean D(r) and D(r) - mean D(f) as logits
  'wgan'      D: mean D(f) - mean D(r);  G: -mean D(f);  the trainer clips D's params after each
              D step (`clip_weights`)
  'wgan_gp'   as 'wgan'; the trainer adds GP_WEIGHT * `gradient_penalty` to the D loss
  'ragan_gp'  as 'ragan'; the trainer adds GP_WEIGHT * `gradient_penalty` to the D loss
  'wgan_l1'   the thesis' Eq. 3.19 form: D: mean|1 - D(r)| + mean|D(f)|;  G: mean|1 - D(f)|
  'scalegan'  scale labels (MIASSR code, `scale` = HR size / LR size):
              D: mean|D(r) - 1| + mean|D(f) - 1/scale|;  G: mean|1 - D(f)|

The losses are computed in float32, or float64 when the inputs are float64. `kind` is a Python
string, so it is fixed when a train step is traced.

Run `python -m pytest -q tests/test_adversarial.py` to check them.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

KINDS = ("vanilla", "ragan", "wgan", "wgan_gp", "ragan_gp", "wgan_l1", "scalegan")

WGAN_CLIP = 0.01  # 'wgan': every discriminator parameter is clamped to [-0.01, 0.01] after a D step
GP_WEIGHT = 10.0  # 'wgan_gp' / 'ragan_gp': weight of the gradient penalty in the D loss


def _check_kind(kind: str) -> str:
  if kind not in KINDS:
    raise ValueError(f"unknown adversarial loss kind {kind!r}; known: {', '.join(KINDS)}")
  return kind


def uses_penalty(kind: str) -> bool:
  """Whether the trainer adds GP_WEIGHT * `gradient_penalty` to the D loss of `kind`."""
  return _check_kind(kind) in ("wgan_gp", "ragan_gp")


def clips_weights(kind: str) -> bool:
  """Whether the trainer clips the discriminator's params (`clip_weights`) after each D step."""
  return _check_kind(kind) == "wgan"


def _as_float(d_real, d_fake):
  """Both outputs in their common float type, at least float32."""
  dtype = jnp.promote_types(jnp.result_type(d_real, d_fake), jnp.float32)
  return jnp.asarray(d_real, dtype), jnp.asarray(d_fake, dtype)


def _bce(logits, target: float):
  """Mean binary cross-entropy with logits against a constant 0 or 1 target (numerically stable).

  -log sigmoid(x) = softplus(-x) and -log(1 - sigmoid(x)) = softplus(x); softplus never overflows.
  """
  return jnp.mean(jax.nn.softplus(-logits if target == 1 else logits))


def _relativistic(d_real, d_fake):
  """The relativistic-average logits: D(f) - mean D(r) and D(r) - mean D(f)."""
  return d_fake - jnp.mean(d_real), d_real - jnp.mean(d_fake)


def _inverse_scale(scale, dtype):
  if scale is None:
    raise ValueError("the 'scalegan' loss needs `scale` (HR size / LR size, scalar or (N, 1))")
  return 1 / jnp.asarray(scale, dtype)


def discriminator_loss(kind: str, d_real, d_fake, scale=None):
  """The discriminator's loss of `kind` (see the module docstring), without any gradient penalty.

  `scale` (HR size / LR size, a scalar or (N, 1)) is needed by 'scalegan' and ignored otherwise.
  """
  kind = _check_kind(kind)
  d_real, d_fake = _as_float(d_real, d_fake)
  if kind == "vanilla":
    return _bce(d_fake, 0) + _bce(d_real, 1)
  if kind in ("ragan", "ragan_gp"):
    rel_fake, rel_real = _relativistic(d_real, d_fake)
    return _bce(rel_fake, 0) + _bce(rel_real, 1)
  if kind in ("wgan", "wgan_gp"):
    return jnp.mean(d_fake) - jnp.mean(d_real)
  if kind == "wgan_l1":
    return jnp.mean(jnp.abs(1 - d_real)) + jnp.mean(jnp.abs(d_fake))
  inv = _inverse_scale(scale, d_fake.dtype)  # 'scalegan'
  return jnp.mean(jnp.abs(d_real - 1)) + jnp.mean(jnp.abs(d_fake - inv))


def generator_loss(kind: str, d_real, d_fake, scale=None):
  """The generator's adversarial loss of `kind` (see the module docstring).

  `d_real` is used by 'ragan' / 'ragan_gp' only. `scale` is checked for 'scalegan' (whose G target
  is 1 whatever the scale) and ignored otherwise.
  """
  kind = _check_kind(kind)
  d_real, d_fake = _as_float(d_real, d_fake)
  if kind == "vanilla":
    return _bce(d_fake, 1)
  if kind in ("ragan", "ragan_gp"):
    rel_fake, rel_real = _relativistic(d_real, d_fake)
    return 0.5 * (_bce(rel_fake, 1) + _bce(rel_real, 0))
  if kind in ("wgan", "wgan_gp"):
    return -jnp.mean(d_fake)
  if kind == "scalegan":
    _inverse_scale(scale, d_fake.dtype)
  return jnp.mean(jnp.abs(1 - d_fake))  # 'wgan_l1' and 'scalegan'


def clip_weights(params: Any, limit: float = WGAN_CLIP) -> Any:
  """`params` with every leaf clamped to [-limit, limit] ('wgan', after each D step).

  Pass the discriminator's trainable params only (PyTorch clamps `D.parameters()`, which holds the
  BatchNorm scale and bias but not its running statistics).
  """
  return jax.tree.map(lambda p: jnp.clip(p, -limit, limit), params)


def sample_alpha(rng: jax.Array, n: int, dtype=jnp.float32) -> jax.Array:
  """The per-sample interpolation weights of the gradient penalty: U[0, 1) of shape (n,)."""
  return jax.random.uniform(rng, (n,), dtype)


def _safe_norm(sq):
  """sqrt(sq), with the gradient 0 (not NaN) where sq == 0 and exact everywhere else."""
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1)), 0)


def gradient_penalty(critic_fn: Callable, real, fake, alpha):
  """mean_n (||grad_x D(x_n)||_2 - 1)^2 at x_n = fake_n (1 - alpha_n) + real_n alpha_n (no weight).

  `critic_fn` maps NHWC images to (N, 1); `alpha` is (N,), broadcast over H, W and C. The input
  gradient is that of `critic_fn(x).sum()`: each sample's gradient as long as the critic has no
  layer that mixes samples (no BatchNorm in train mode, as in the reference). The norm is over every
  element of a sample.

  The result is differentiable w.r.t. whatever `critic_fn` closes over (the trainer differentiates
  it w.r.t. the critic's params: reverse over reverse). No epsilon is added inside the norm, so its
  value is exact; where a sample's gradient is exactly zero the norm's own gradient would be 0/0,
  so it is taken as 0 there instead (as PyTorch's `norm` backward does): that sample then adds 1 to
  the sum and nothing to the params' gradient. Pass the fake batch without a gradient path to the
  generator (`jax.lax.stop_gradient`), as the reference's D step does.
  """
  alpha = jnp.asarray(alpha, real.dtype).reshape((-1,) + (1,) * (real.ndim - 1))
  x = fake * (1 - alpha) + real * alpha
  grads = jax.grad(lambda xs: jnp.sum(critic_fn(xs)))(x)
  sq = jnp.sum(jnp.square(grads.reshape(grads.shape[0], -1)), axis=1)
  return jnp.mean(jnp.square(_safe_norm(sq) - 1))
