"""The pure train step and the train state it updates.

The train state is a plain pytree (a dict), so optax, orbax and the sharding rules see ordinary
arrays:

  params     the model parameters (the 'params' collection)
  model_state  every other variable collection of the model: BatchNorm running statistics
             ('batch_stats', updated by the train step), the mean-shift 'constants', an imported
             checkpoint's 'unused' tensors ({} for a model without any)
  opt_state  the optimiser state of the current stage (re-initialised when a stage starts)
  ema        exponential moving average of params (only when train.ema_decay > 0)
  step       global iteration counter (advances on every batch, applied or not)
  stage      index of the stage `opt_state` belongs to
  skipped    number of steps rejected by the loss guard
  rng        PRNG key data for stochastic losses (GAN noise, dropout, ...)

`make_train_step` is generic over an objective
`objective(params, model_state, batch, rng) -> (loss, (aux, new_model_state))`, so the pixel,
perceptual and adversarial trainers share the guard, the optimiser and the EMA. The guard follows
the author's code (reference spec §3.1, thesis §4.3.4): a step whose loss is not finite or exceeds
`loss_threshold` (1e8) changes nothing but `step`, `skipped` and `rng`.

`model_forward(model)` runs a model in training mode the same way for every family of the zoo:
`train=True` when its `__call__` takes it (BatchNorm batch statistics, SwinIR's DropPath with the
'dropout' rng), 'batch_stats' mutable when the model has them.
"""

from __future__ import annotations

import collections
import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from medsr_jax.losses import pixel
from medsr_jax.trainers import schedule

# How often each named step function was traced (compiled). A test checks the step compiles once.
TRACE_COUNTS: collections.Counter = collections.Counter()

Objective = Callable[[Any, dict, dict, jax.Array], tuple[jax.Array, tuple[dict, dict]]]
# Collections a training forward pass updates (the others in model_state are constants).
MUTABLE_COLLECTIONS = ('batch_stats',)


def make_optimizer(train_config, stage) -> optax.GradientTransformation:
  """Adam (PyTorch semantics: L2 weight decay added to the gradient) with the stage's schedule."""
  def adam(learning_rate):
    tx = optax.adam(learning_rate, b1=train_config.b1, b2=train_config.b2, eps=train_config.eps)
    if train_config.weight_decay:
      tx = optax.chain(optax.add_decayed_weights(train_config.weight_decay), tx)
    return tx
  if train_config.optimizer != "adam":
    raise ValueError(f"unsupported optimizer {train_config.optimizer!r} (only 'adam')")
  return optax.inject_hyperparams(adam)(learning_rate=schedule.stage_schedule(stage))


def split_variables(variables: dict) -> tuple[Any, dict]:
  """(params, model_state) of a model's variables dict."""
  variables = dict(variables)
  return variables.pop("params"), variables


def init_state(params: Any, tx: optax.GradientTransformation, rng: jax.Array, *,
               ema: bool, model_state: dict | None = None) -> dict:
  """A fresh train state at step 0, stage 0."""
  state = dict(params=params, model_state=dict(model_state or {}), opt_state=tx.init(params),
               step=jnp.zeros((), jnp.int32),
               stage=jnp.zeros((), jnp.int32), skipped=jnp.zeros((), jnp.int32),
               rng=jax.random.key_data(rng))
  if ema:
    state["ema"] = jax.tree.map(jnp.copy, params)
  return state


def _takes_train(model) -> bool:
  return "train" in inspect.signature(model.__call__).parameters


def model_forward(model) -> Callable[[Any, dict, jax.Array, jax.Array], tuple[Any, dict]]:
  """`forward(params, model_state, x, rng) -> (y, new_model_state)` in training mode."""
  takes_train = _takes_train(model)

  def forward(params, model_state, x, rng):
    variables = {"params": params, **model_state}
    kwargs = {"train": True} if takes_train else {}
    mutable = [c for c in MUTABLE_COLLECTIONS if c in model_state]
    rngs = {"dropout": rng}
    if not mutable:
      return model.apply(variables, x, rngs=rngs, **kwargs), model_state
    y, updates = model.apply(variables, x, rngs=rngs, mutable=mutable, **kwargs)
    return y, {**model_state, **updates}
  return forward


def pixel_objective(model, loss_name: str) -> Objective:
  """`loss(model(lr), hr)` for a pixel loss by name ('l1', 'mse')."""
  loss_fn = pixel.get(loss_name)
  forward = model_forward(model)

  def objective(params, model_state, batch, rng):
    pred, new_model_state = forward(params, model_state, batch["lr"], rng)
    return loss_fn(pred, batch["hr"]), ({}, new_model_state)
  return objective


def make_train_step(objective: Objective, tx: optax.GradientTransformation, *,
                    loss_threshold: float, ema_decay: float = 0.0, name: str = "train_step"):
  """Builds `step(state, batch) -> (state, metrics)`; jit it with shardings (see trainers/sr.py)."""

  def step(state, batch):
    TRACE_COUNTS[name] += 1  # Python side effect: runs only while tracing.
    rng, step_rng = jax.random.split(jax.random.wrap_key_data(state["rng"]))
    (loss, (aux, model_state)), grads = jax.value_and_grad(objective, has_aux=True)(
        state["params"], state["model_state"], batch, step_rng)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    ok = jnp.isfinite(loss) & (loss <= loss_threshold)

    def choose(new, old):
      return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)

    new_state = dict(state, params=choose(params, state["params"]),
                     model_state=choose(model_state, state["model_state"]),
                     opt_state=choose(opt_state, state["opt_state"]),
                     step=state["step"] + 1, skipped=state["skipped"] + (~ok).astype(jnp.int32),
                     rng=jax.random.key_data(rng))
    if "ema" in state:
      ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, state["ema"], params)
      new_state["ema"] = choose(ema, state["ema"])
    metrics = dict(loss=loss, grad_norm=optax.global_norm(grads),
                   learning_rate=state["opt_state"].hyperparams["learning_rate"],
                   skipped=(~ok).astype(jnp.int32), **aux)
    return new_state, metrics

  return step


def jit_train_step(step_fn, state_shardings, batch_shardings, metric_sharding):
  """`jax.jit` with explicit in/out shardings and the state donated (updated in place)."""
  return jax.jit(step_fn, in_shardings=(state_shardings, batch_shardings),
                 out_shardings=(state_shardings, metric_sharding), donate_argnums=0)
