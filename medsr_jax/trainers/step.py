"""Step building blocks shared by every trainer: optimiser, training forward pass, jitted steps.

  make_optimizer(train_config, stage)   Adam (PyTorch semantics) with the stage's LR schedule
  model_forward(model)                  the zoo's training-mode forward, one convention for all
  pixel_objective(model, 'l1')          a generator objective of one pixel loss
  make_train_step(objective, tx, ...)   `step(state, batch, frozen) -> (state, metrics)` of one
                                        player ('g'): value_and_grad + `state.guarded_update`
  jit_step(step_fn, ...)                `jax.jit` with explicit shardings, the state donated, traced
                                        under the run's `ComputePolicy`; prints the compiled
                                        step's memory analysis when it first compiles
  ComputePolicy(precision, remat)       `--config.train.precision=fp32|bf16`, `train.remat=none|
                                        blocks|full` (`policy_from_config(config.train)`)

An objective is `objective(params, model_state, batch, rng, frozen) -> (loss, (aux, model_state))`
where `frozen` holds the frozen networks' variables (VGG-19, a segmentation U-Net), a replicated
step argument that is never donated and never checkpointed. The state layout is `trainers.state`.

`model_forward(model)` runs a model in training mode the same way for every family of the zoo,
through `models.registry.call_model` (the model's declared calling convention, no signature
sniffing): `train=True` when the model takes it (BatchNorm batch statistics, SwinIR's DropPath
with the 'dropout' rng), 'batch_stats' mutable when the model has them, a static `scale` for
scale-taking models (meta models: `scale=`, else their nominal `scale` field), and the primary
output (`registry.primary_output`: ms_gan's final x4 image).

Mixed precision (`ComputePolicy(precision='bf16')`): the master weights stay float32 everywhere
(train state, optimiser, EMA, checkpoints, exports); `model_forward` casts the floating params
and the input to bfloat16 inside the differentiated function, so every convolution and matmul of
the forward and backward passes runs in bfloat16, and casts the network's outputs back to
float32, so that every loss term is computed and reduced in float32. The gradients arrive in
float32 (the cast's transpose). BatchNorm statistics stay float32 (the updated ones are cast back
to their stored dtype). Sums stay float32 where bfloat16 would stall: a bfloat16 running sum stops
growing at 2^8 times its terms, so every gradient that sums over the batch and the pixels
(biases, PReLU slopes, layer scales, Swin's relative-position tables, channel attention) is
accumulated in float32 (`layers.common.broadcast_like`; a test scans the bf16 backward pass of
the zoo for bfloat16 sums), convolutions and matmuls accumulate in float32 inside the backends,
and `jnp` reductions (means, norms' statistics, softmax) upcast by themselves; DropPath draws its
mask in float32 (the same samples as in float32). There is no loss scaling: it exists for
float16, whose 5-bit exponent flushes gradients below 6e-5 (6e-8 subnormal) to zero; bfloat16
has float32's 8-bit exponent (smallest normal 1.2e-38), so the gradients that float32 represents
do not underflow in it, and what bfloat16 loses is mantissa (8 bits), which scaling cannot
restore. The frozen loss networks (VGG-19, the segmentation U-Net) get float32 images and run in
float32.

Rematerialisation (`ComputePolicy(remat=...)`): see `layers/remat.py`; 'full' also puts the
whole network's forward pass under `jax.checkpoint` here. The parameter tree is unchanged.

The policy reaches `model_forward` in two ways: as its `policy` argument, or, when that is None,
from `use_policy(policy)`, the context `jit_step` traces the step in; so the trainers' steps
(SR, GAN generator and discriminator, arbitrary-scale, segmentation) need no argument of their
own. With the default policy (fp32, no remat) the program is exactly the one without a policy.

Run the checks with:
  .venv/bin/python -m pytest -q tests/test_train_step.py tests/test_gan.py tests/test_precision.py
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import dataclasses
import functools
from typing import Any, Callable, Iterator, Optional

import jax
import jax.numpy as jnp
import optax

from medsr_jax.layers import remat as remat_lib
from medsr_jax.losses import pixel
from medsr_jax.models import registry
from medsr_jax.trainers import schedule
from medsr_jax.trainers import state as state_lib

# How often each named step function was traced (compiled). A test checks the step compiles once.
TRACE_COUNTS: collections.Counter = collections.Counter()

Objective = Callable[[Any, dict, dict, jax.Array, dict], tuple[jax.Array, tuple[dict, dict]]]
# Collections a training forward pass updates (the others in model_state are constants).
MUTABLE_COLLECTIONS = ('batch_stats',)


PRECISIONS = ("fp32", "bf16")
COMPUTE_DTYPES = {"fp32": jnp.float32, "bf16": jnp.bfloat16}
REMAT_MODES = remat_lib.MODES


@dataclasses.dataclass(frozen=True)
class ComputePolicy:
  """How a train step computes: `precision` 'fp32' | 'bf16' (bfloat16 compute, float32 master
  weights and losses) and `remat` 'none' | 'blocks' | 'full' (`layers/remat.py`)."""
  precision: str = "fp32"
  remat: str = "none"

  def __post_init__(self):
    if self.precision not in PRECISIONS:
      raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
    remat_lib.check_mode(self.remat)

  @property
  def compute_dtype(self):
    return COMPUTE_DTYPES[self.precision]

  @property
  def is_default(self) -> bool:
    return self == ComputePolicy()


def policy_from_config(train_config) -> ComputePolicy:
  """The `ComputePolicy` of `config.train` (`precision`, `remat`; absent: the defaults)."""
  return ComputePolicy(precision=str(train_config.get("precision", "fp32")),
                       remat=str(train_config.get("remat", "none")))


_POLICY: contextvars.ContextVar[ComputePolicy] = contextvars.ContextVar(
    "medsr_compute_policy", default=ComputePolicy())


def current_policy() -> ComputePolicy:
  """The policy of the step being traced (the default outside `use_policy`)."""
  return _POLICY.get()


@contextlib.contextmanager
def use_policy(policy: ComputePolicy) -> Iterator[None]:
  """`model_forward`s traced inside run under `policy` (their blocks remat per `policy.remat`)."""
  token = _POLICY.set(policy)
  try:
    with remat_lib.use(policy.remat):
      yield
  finally:
    _POLICY.reset(token)


def cast_floating(tree: Any, dtype) -> Any:
  """`tree` with its floating-point leaves cast to `dtype` (integer leaves, keys unchanged)."""
  def cast(x):
    return x.astype(dtype) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x
  return jax.tree.map(cast, tree)


def _cast_like(new: dict, old: dict) -> dict:
  """The updated collections `new` in the dtypes of the stored ones `old` (BatchNorm statistics
  stay float32 under bf16 compute); a collection `old` lacks is kept as it is."""
  out = {}
  for name, value in new.items():
    ref = old.get(name, None)
    if ref is not None and jax.tree.structure(ref) == jax.tree.structure(value):
      value = jax.tree.map(lambda n, o: n.astype(jnp.result_type(o)), value, ref)
    out[name] = value
  return out


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


def model_forward(model, *, scale: Optional[float] = None, all_outputs: bool = False,
                  policy: Optional[ComputePolicy] = None
                  ) -> Callable[[Any, dict, jax.Array, Optional[jax.Array]], tuple[Any, dict]]:
  """`forward(params, model_state, x, rng) -> (y, new_model_state)` in training mode.

  `y` is the primary output (`registry.primary_output`), or with `all_outputs` everything the
  model returns (ms_gan: the tuple (x2, x4) of its multi-scale loss, thesis eq. 3.21); `rng`
  None passes no 'dropout' rng. `scale` (static) is for scale-taking models; default: the
  model's own `scale` field. `policy`: precision and rematerialisation (module docstring);
  None: the policy of the step being traced (`use_policy`), read when `forward` is traced. Under
  bf16 the outputs are float32, the master `params` untouched.
  """
  scale = registry.default_call_scale(model, scale)

  def call(params, model_state, x, rng):
    variables = {"params": params, **model_state}
    rngs = {"dropout": rng} if rng is not None else None
    return registry.call_model(model, variables, x, scale=scale, train=True, rngs=rngs,
                               mutable=MUTABLE_COLLECTIONS)

  def forward(params, model_state, x, rng):
    p = current_policy() if policy is None else policy
    if p.is_default:
      outputs, updates = call(params, model_state, x, rng)
    else:
      dtype = p.compute_dtype
      run = jax.checkpoint(call) if p.remat == "full" else call
      if dtype != jnp.float32:
        params, x = cast_floating(params, dtype), cast_floating(x, dtype)
      with use_policy(p):  # the model's blocks are traced under p.remat
        outputs, updates = run(params, model_state, x, rng)
      if dtype != jnp.float32:
        outputs = cast_floating(outputs, jnp.float32)
        updates = _cast_like(updates, model_state)
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


def memory_stats(compiled) -> Optional[dict]:
  """{argument, output, alias, temp, generated_code, peak: bytes} of a compiled executable
  (`Compiled.memory_analysis()`); None when the backend gives no analysis. `peak` is the
  estimate arguments + outputs - aliased (outputs written into donated buffers) + temporaries
  (XLA's `peak_memory_in_bytes` is not used: XLA:CPU leaves the temporaries out of it)."""
  try:
    analysis = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if analysis is None:
    return None
  def get(field):
    return int(getattr(analysis, f"{field}_size_in_bytes", 0) or 0)
  stats = {k: get(k) for k in ("argument", "output", "alias", "temp", "generated_code")}
  stats["peak"] = stats["argument"] + stats["output"] - stats["alias"] + stats["temp"]
  return stats


def memory_line(name: str, stats: dict) -> str:
  """The one start-up line of a compiled step's memory analysis."""
  mib = lambda n: f"{n / 2 ** 20:.1f} MiB"
  return (f"compiled {name}: arguments {mib(stats['argument'])}, outputs {mib(stats['output'])} "
          f"({mib(stats['alias'])} of them in donated buffers), temporaries "
          f"{mib(stats['temp'])}, generated code {mib(stats['generated_code'])}; peak estimate "
          f"{mib(stats['peak'])} per device")


class CompiledStep:
  """A jitted step whose first call compiles it ahead of time (`jitted.lower(...).compile()`,
  which fills jit's own cache, so it is compiled once) and, on process 0, prints its memory
  analysis (`memory_line`); every call then goes through `jitted`. `extra_args` are appended to
  each call's arguments. `memory`: the analysis (`memory_stats`) once compiled."""

  def __init__(self, jitted, extra_args: tuple = (), *, report: bool = True):
    self.jitted, self.extra_args, self.report = jitted, tuple(extra_args), report
    self.compiled = False
    self.memory: Optional[dict] = None
    self.name = "train step"

  def __call__(self, *args):
    args = args + self.extra_args
    if not self.compiled:
      before = dict(TRACE_COUNTS)
      compiled = self.jitted.lower(*args).compile()
      traced = [k for k, v in TRACE_COUNTS.items() if v != before.get(k, 0)]
      self.name = f"step {', '.join(traced)}" if traced else self.name
      self.compiled, self.memory = True, memory_stats(compiled)
      if self.report and self.memory is not None and jax.process_index() == 0:
        print(memory_line(self.name, self.memory), flush=True)
    return self.jitted(*args)


def jit_step(step_fn, state_shardings, batch_shardings, metric_sharding, frozen_shardings=None,
             *, policy: Optional[ComputePolicy] = None, report_memory: bool = True,
             compiler_options: Optional[dict] = None) -> CompiledStep:
  """`jax.jit` of `step(state, batch, frozen)` with explicit shardings; the state is donated
  (updated in place), the frozen networks are not. The step is traced under `policy` (default:
  fp32, no remat, the program of a step without one) and reports its compiled memory on its
  first call (`CompiledStep`). `compiler_options`: XLA options of this program
  (`medsr_jax.cpu_compile.compiler_options(model)`)."""
  policy = ComputePolicy() if policy is None else policy

  @functools.wraps(step_fn)
  def traced(state, batch, frozen=None):
    with use_policy(policy):
      return step_fn(state, batch, frozen)

  jitted = jax.jit(traced, in_shardings=(state_shardings, batch_shardings, frozen_shardings),
                   out_shardings=(state_shardings, metric_sharding), donate_argnums=0,
                   compiler_options=compiler_options)
  return CompiledStep(jitted, report=report_memory)


def jit_train_step(step_fn, state_shardings, batch_shardings, metric_sharding, *,
                   policy: Optional[ComputePolicy] = None, report_memory: bool = True,
                   compiler_options: Optional[dict] = None) -> CompiledStep:
  """`jit_step` for a step without frozen networks, called as `step(state, batch)`."""
  jitted = jit_step(step_fn, state_shardings, batch_shardings, metric_sharding, None,
                    policy=policy, report_memory=report_memory,
                    compiler_options=compiler_options)
  return CompiledStep(jitted.jitted, (None,), report=report_memory)
