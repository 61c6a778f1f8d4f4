"""The train state as named players, and the one guarded update every player goes through.

The state is a plain pytree, so optax, orbax and the sharding rules see ordinary arrays:

  step     global iteration counter (advances on every batch, applied or not)
  stage    index of the stage the optimiser states belong to
  rng      PRNG key data for stochastic parts (dropout, GAN interpolation, noise)
  players  {'g': player, 'd': player, ...}; a player is
           params       the 'params' collection of its network
           model_state  every other collection: BatchNorm statistics ('batch_stats', updated by
                        the step), mean-shift 'constants', an imported checkpoint's 'unused'
           opt_state    its optimiser state for the current stage (re-initialised per stage)
           ema          exponential moving average of params (only when EMA is on)
           skipped      how many of its updates the loss guard rejected

`guarded_update` is the update of every player: the gradients go through the player's
optimiser, and the result is kept only when the loss is finite and at most `loss_threshold`
(the author's 1e8 guard, reference spec §3.1, thesis §4.3.4), else the player is unchanged and
its `skipped` counter grows. An optional `post_update` (WGAN's weight clipping) runs on the new
params. Frozen networks (VGG-19, a segmentation U-Net) are not players: they are a separate,
non-donated step argument and are never checkpointed.

Run `python -m pytest tests/test_train_step.py tests/test_gan.py`.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax

GENERATOR = "g"
DISCRIMINATOR = "d"


def init_player(params: Any, tx: optax.GradientTransformation, *, ema: bool,
                model_state: Optional[dict] = None) -> dict:
  """A fresh player: params, model_state, optimiser state, `skipped` = 0 (+ EMA copy)."""
  player = dict(params=params, model_state=dict(model_state or {}), opt_state=tx.init(params),
                skipped=jnp.zeros((), jnp.int32))
  if ema:
    player["ema"] = jax.tree.map(jnp.copy, params)
  return player


def init_state(players: dict[str, dict], rng: jax.Array) -> dict:
  """The train state at step 0, stage 0."""
  return dict(step=jnp.zeros((), jnp.int32), stage=jnp.zeros((), jnp.int32),
              rng=jax.random.key_data(rng), players=dict(players))


def loss_ok(loss: jax.Array, loss_threshold: float) -> jax.Array:
  """The guard: True when `loss` is finite and not above `loss_threshold`."""
  return jnp.isfinite(loss) & (loss <= loss_threshold)


def guarded_update(player: dict, grads: Any, loss: jax.Array, tx: optax.GradientTransformation,
                   *, loss_threshold: float, new_model_state: Optional[dict] = None,
                   ema_decay: float = 0.0,
                   post_update: Optional[Callable[[Any], Any]] = None) -> tuple[dict, jax.Array]:
  """(updated player, ok): one optimiser step, kept only if the guard accepts `loss`."""
  ok = loss_ok(loss, loss_threshold)
  updates, opt_state = tx.update(grads, player["opt_state"], player["params"])
  params = optax.apply_updates(player["params"], updates)
  if post_update is not None:
    params = post_update(params)
  model_state = player["model_state"] if new_model_state is None else new_model_state

  def choose(new, old):
    return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)

  new = dict(player, params=choose(params, player["params"]),
             model_state=choose(model_state, player["model_state"]),
             opt_state=choose(opt_state, player["opt_state"]),
             skipped=player["skipped"] + (~ok).astype(jnp.int32))
  if "ema" in player:
    ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, player["ema"], params)
    new["ema"] = choose(ema, player["ema"])
  return new, ok


def learning_rate(player: dict) -> jax.Array:
  """The learning rate the player's optimiser used at this step (inject_hyperparams)."""
  return player["opt_state"].hyperparams["learning_rate"]
