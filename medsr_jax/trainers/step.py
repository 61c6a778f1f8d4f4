"""Step building blocks shared by every trainer: optimiser, training forward pass, jitted steps.

  make_optimizer(train_config, stage)   Adam (PyTorch semantics) with the stage's LR schedule
  model_forward(model)                  the zoo's training-mode forward, one convention for all
  pixel_objective(model, 'l1')          a generator objective of one pixel loss
  make_train_step(objective, tx, ...)   `step(state, batch, frozen) -> (state, metrics)` of one
                                        player ('g'): value_and_grad + `state.guarded_update`
  jit_step(step_fn, ...)                `jax.jit` with explicit shardings, the state donated

An objective is `objective(params, model_state, batch, rng, frozen) -> (loss, (aux, model_state))`
where `frozen` holds the frozen networks' variables (VGG-19, a segmentation U-Net), a replicated
step argument that is never donated and never checkpointed. The state layout is `trainers.state`.

`model_forward(model)` runs a model in training mode the same way for every family of the zoo,
through `models.registry.call_model` (the model's declared calling convention, no signature
sniffing): `train=True` when the model takes it (BatchNorm batch statistics, SwinIR's DropPath
with the 'dropout' rng), 'batch_stats' mutable when the model has them, a static `scale` for
scale-taking models (meta models: `scale=`, else their nominal `scale` field), and the primary
output (`registry.primary_output`: ms_gan's final x4 image).

Run the checks with:
  .venv/bin/python -m pytest -q tests/test_train_step.py tests/test_gan.py
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax

from medsr_jax.losses import pixel
from medsr_jax.models import registry
from medsr_jax.trainers import schedule
from medsr_jax.trainers import state as state_lib

# How often each named step function was traced (compiled). A test checks the step compiles once.
TRACE_COUNTS: collections.Counter = collections.Counter()

Objective = Callable[[Any, dict, dict, jax.Array, dict], tuple[jax.Array, tuple[dict, dict]]]
# Collections a training forward pass updates (the others in model_state are constants).
MUTABLE_COLLECTIONS = ('batch_stats',)


def parse_freeze(text: Any) -> tuple[str, ...]:
  """`train.freeze` ('feature_extractor', 'a,b/c' or a sequence) as a tuple of param paths."""
  items = text.split(",") if isinstance(text, str) else list(text or ())
  return tuple(str(t).strip().strip("/") for t in items if str(t).strip())


def _path_name(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def freeze_labels(params: Any, freeze: tuple[str, ...]) -> Any:
  """'frozen' for every leaf under one of the `freeze` paths ('feature_extractor', or a deeper
  'feature_extractor/head'), 'trained' for the rest."""
  def label(path, _):
    name = _path_name(path)
    return "frozen" if any(name == f or name.startswith(f + "/") for f in freeze) else "trained"
  return jax.tree_util.tree_map_with_path(label, params)


def check_freeze(params: Any, freeze: tuple[str, ...]) -> None:
  """InputError for a `train.freeze` path that names no parameter of the model."""
  from medsr_jax.errors import InputError  # pylint: disable=import-outside-toplevel
  names = [_path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  for f in freeze:
    if not any(n == f or n.startswith(f + "/") for n in names):
      top = sorted({n.split("/", 1)[0] for n in names})
      raise InputError(f"train.freeze names {f!r}, which is not a parameter path of this model; "
                       f"its top-level parameter groups: {', '.join(top)}")


def make_optimizer(train_config, stage, *, freeze: tuple[str, ...] = ()
                   ) -> optax.GradientTransformation:
  """Adam (PyTorch semantics: L2 weight decay added to the gradient) with the stage's schedule.

  `freeze`: param paths whose updates are exactly zero (transfer learning with a fixed feature
  extractor, thesis §4.3.3; the reference's `requires_grad_(False)`); they get no Adam state.
  """
  def adam(learning_rate):
    tx = optax.adam(learning_rate, b1=train_config.b1, b2=train_config.b2, eps=train_config.eps)
    if train_config.weight_decay:
      tx = optax.chain(optax.add_decayed_weights(train_config.weight_decay), tx)
    if freeze:
      tx = optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()},
                                 lambda params: freeze_labels(params, freeze))
    return tx
  if train_config.optimizer != "adam":
    raise ValueError(f"unsupported optimizer {train_config.optimizer!r} (only 'adam')")
  return optax.inject_hyperparams(adam)(learning_rate=schedule.stage_schedule(stage))


def split_variables(variables: dict) -> tuple[Any, dict]:
  """(params, model_state) of a model's variables dict."""
  variables = dict(variables)
  return variables.pop("params"), variables


def model_forward(model, *, scale: Optional[float] = None, all_outputs: bool = False
                  ) -> Callable[[Any, dict, jax.Array, Optional[jax.Array]], tuple[Any, dict]]:
  """`forward(params, model_state, x, rng) -> (y, new_model_state)` in training mode.

  `y` is the primary output (`registry.primary_output`), or with `all_outputs` everything the
  model returns (ms_gan: the tuple (x2, x4) of its multi-scale loss, thesis eq. 3.21); `rng`
  None passes no 'dropout' rng. `scale` (static) is for scale-taking models; default: the
  model's own `scale` field.
  """
  scale = registry.default_call_scale(model, scale)

  def forward(params, model_state, x, rng):
    variables = {"params": params, **model_state}
    rngs = {"dropout": rng} if rng is not None else None
    outputs, updates = registry.call_model(model, variables, x, scale=scale, train=True,
                                           rngs=rngs, mutable=MUTABLE_COLLECTIONS)
    y = outputs if all_outputs else registry.primary_output(model, outputs)
    return y, {**model_state, **updates}
  return forward


def pixel_objective(model, loss_name: str) -> Objective:
  """`loss(model(lr), hr)` for a pixel loss by name ('l1', 'mse')."""
  loss_fn = pixel.get(loss_name)
  forward = model_forward(model)

  def objective(params, model_state, batch, rng, frozen=None):
    del frozen
    pred, new_model_state = forward(params, model_state, batch["lr"], rng)
    return loss_fn(pred, batch["hr"]), ({}, new_model_state)
  return objective


def make_train_step(objective: Objective, tx: optax.GradientTransformation, *,
                    loss_threshold: float, ema_decay: float = 0.0, name: str = "train_step",
                    player: str = state_lib.GENERATOR):
  """`step(state, batch, frozen=None) -> (state, metrics)` updating one player with `objective`."""

  def step(state, batch, frozen=None):
    TRACE_COUNTS[name] += 1  # Python side effect: runs only while tracing.
    rng, step_rng = jax.random.split(jax.random.wrap_key_data(state["rng"]))
    me = state["players"][player]
    (loss, (aux, model_state)), grads = jax.value_and_grad(objective, has_aux=True)(
        me["params"], me["model_state"], batch, step_rng, frozen or {})
    new, ok = state_lib.guarded_update(me, grads, loss, tx, loss_threshold=loss_threshold,
                                       new_model_state=model_state, ema_decay=ema_decay)
    new_state = dict(state, step=state["step"] + 1, rng=jax.random.key_data(rng),
                     players={**state["players"], player: new})
    metrics = dict(loss=loss, grad_norm=optax.global_norm(grads),
                   learning_rate=state_lib.learning_rate(me),
                   skipped=(~ok).astype(jnp.int32), **aux, **batch_scale(batch))
    return new_state, metrics

  return step


def batch_scale(batch: dict) -> dict:
  """{'scale': the batch's scale} for arbitrary-scale batches (logged per step), else {}."""
  return {"scale": jnp.mean(batch["scale"])} if "scale" in batch else {}


def jit_step(step_fn, state_shardings, batch_shardings, metric_sharding, frozen_shardings=None):
  """`jax.jit` of `step(state, batch, frozen)` with explicit shardings; the state is donated
  (updated in place), the frozen networks are not."""
  return jax.jit(step_fn, in_shardings=(state_shardings, batch_shardings, frozen_shardings),
                 out_shardings=(state_shardings, metric_sharding), donate_argnums=0)


def jit_train_step(step_fn, state_shardings, batch_shardings, metric_sharding):
  """`jit_step` for a step without frozen networks, called as `step(state, batch)`."""
  jitted = jit_step(step_fn, state_shardings, batch_shardings, metric_sharding, None)
  return lambda state, batch: jitted(state, batch, None)
