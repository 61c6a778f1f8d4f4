"""Accelerator options of the train step (issue 13, point 4): bf16 compute with float32 master
weights, rematerialisation of the repeated blocks, the compiled memory line, bench_train's MFU.

  .venv/bin/python -m pytest -q tests/test_precision.py
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import bench_train
from medsr_jax import config_checks, config_lib, models, sharding
from medsr_jax.layers import common
from medsr_jax.layers import remat as remat_lib
from medsr_jax.losses import adversarial
from medsr_jax.trainers import gan, objectives
from medsr_jax.trainers import state as state_lib
from medsr_jax.trainers import step as step_lib

# Tiny models: a scanned CNN, and an unrolled one with BatchNorm statistics and a shared PReLU
# slope (the two stacking paths of `layers/remat.py`).
EDSR = dict(n_feats=8, n_resblocks=2)
SRRESNET = dict(n_feats=8, n_resblocks=2, scan_blocks=False)
# The zoo's families, tiny, for the bf16 backward-pass scan (traced only, never compiled).
ZOO = {
    "edsr_lite": EDSR, "srresnet": dict(n_feats=8, n_resblocks=2),
    "rdst_gff": dict(embed_dim=12, num_blocks=2, num_heads=2, growth_rate=6, window_size=4,
                     dense_layers=2, stl_per_dense=1),
    "swinir_light": dict(embed_dim=12, num_layers=2, depth=2, num_heads=2, window_size=4),
    "rcan": dict(features=16, num_groups=2, num_blocks=2, reduction=4),
    "han": dict(features=16, num_groups=2, num_blocks=2, reduction=4),
    "rdn": dict(features=8, growth_rate=4, num_layers=2, num_blocks=2),
    "esrgan": dict(features=8, growth_rate=4, num_layers=2, num_blocks=2),
    "convnet_lite": dict(features=8, num_blocks=2), "miassr": {}, "ms_gan": {},
}


def _batch(batch=4, lr_patch=8, scale=2, seed=0):
  rng = np.random.default_rng(seed)
  hr = rng.random((batch, lr_patch * scale, lr_patch * scale, 1), dtype=np.float32)
  lr = hr.reshape(batch, lr_patch, scale, lr_patch, scale, 1).mean(axis=(2, 4))
  return {"lr": lr, "hr": hr}


def _state(model, tx):
  params, model_state = step_lib.split_variables(
      model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1))))
  player = state_lib.init_player(params, tx, ema=True, model_state=model_state)
  return state_lib.init_state({"g": player}, jax.random.key(1))


def _one_device_step(model, name, policy=None, report=True):
  """(state, CompiledStep) of the sharded, donated SR train step on one device."""
  mesh = sharding.make_mesh((1, 1), devices=jax.devices()[:1])
  tx = step_lib.make_optimizer(config_lib.base_sr_config().train,
                               config_lib.stage("l1", steps=10, learning_rate=1e-3))
  state_sh = sharding.tree_shardings(jax.eval_shape(lambda: _state(model, tx)), mesh)
  state = jax.jit(lambda: _state(model, tx), out_shardings=state_sh)()
  raw = step_lib.make_train_step(step_lib.pixel_objective(model, "l1"), tx, loss_threshold=1e8,
                                 ema_decay=0.9, name=name)
  batch_sh = sharding.batch_sharding(mesh)
  step = step_lib.jit_train_step(raw, state_sh, {"lr": batch_sh, "hr": batch_sh},
                                 sharding.replicated(mesh), policy=policy, report_memory=report)
  return state, step, mesh


def _dtypes(tree):
  return {str(x.dtype) for x in jax.tree.leaves(tree)}


def test_bf16_step_keeps_float32_master_weights(capsys):
  model = models.build("edsr_lite", scale=2, in_channels=1, **EDSR)
  # The reference: the step exactly as it was built before precision existed (plain jax.jit of
  # the raw step, no policy anywhere).
  tx = step_lib.make_optimizer(config_lib.base_sr_config().train,
                               config_lib.stage("l1", steps=10, learning_rate=1e-3))
  plain = jax.jit(step_lib.make_train_step(step_lib.pixel_objective(model, "l1"), tx,
                                           loss_threshold=1e8, ema_decay=0.9, name="plain"))
  ref_state, ref_metrics = plain(jax.jit(lambda: _state(model, tx))(), _batch())

  results = {}
  for precision in ("fp32", "bf16"):
    policy = step_lib.ComputePolicy(precision=precision)
    state, step, mesh = _one_device_step(model, f"prec_{precision}", policy)
    state, metrics = step(state, sharding.global_batch(_batch(), mesh))
    first = jax.device_get(state)
    state, metrics2 = step(state, sharding.global_batch(_batch(seed=1), mesh))
    results[precision] = (first, metrics, metrics2)
    assert step.compiled and step_lib.TRACE_COUNTS[f"prec_{precision}"] == 1
  out = capsys.readouterr().out
  assert "compiled step prec_bf16: arguments" in out and "peak estimate" in out

  # fp32 (the default policy) is bit for bit the step without the option.
  state32, m32, _ = results["fp32"]
  assert float(m32["loss"]) == float(ref_metrics["loss"])
  for a, b in zip(jax.tree.leaves(state32["players"]), jax.tree.leaves(ref_state["players"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  # bf16: params, Adam moments, EMA and metrics stay float32; the loss is close to fp32's.
  state16, m16, m16_2 = results["bf16"]
  g = state16["players"]["g"]
  assert _dtypes(g["params"]) == {"float32"} and _dtypes(g["ema"]) == {"float32"}
  assert _dtypes(g["opt_state"]) <= {"float32", "int32"}
  assert jax.tree.structure(g["params"]) == jax.tree.structure(state32["players"]["g"]["params"])
  assert m16["loss"].dtype == jnp.float32 and m16["grad_norm"].dtype == jnp.float32
  np.testing.assert_allclose(float(m16["loss"]), float(m32["loss"]), rtol=2e-2)
  np.testing.assert_allclose(float(m16["grad_norm"]), float(m32["grad_norm"]), rtol=5e-2)
  assert int(g["skipped"]) == 0 and np.isfinite(float(m16_2["loss"]))


@pytest.mark.parametrize("name,options,modes", [("edsr_lite", EDSR, ("blocks", "full")),
                                                ("srresnet", SRRESNET, ("blocks",))])
def test_remat_gives_the_same_loss_grads_and_tree(name, options, modes):
  model = models.build(name, scale=2, in_channels=1, **options)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
  params, model_state = step_lib.split_variables(variables)
  batch = _batch()

  def loss_and_grads(policy):
    forward = step_lib.model_forward(model, policy=policy)

    def loss(p):
      y, new_state = forward(p, model_state, batch["lr"], None)
      return jnp.mean(jnp.abs(y - batch["hr"])), new_state
    return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)

  (ref, ref_state), ref_grads = loss_and_grads(step_lib.ComputePolicy())
  for mode in modes:
    (value, new_state), grads = loss_and_grads(step_lib.ComputePolicy(remat=mode))
    np.testing.assert_allclose(float(value), float(ref), rtol=0, atol=1e-6)
    assert jax.tree.structure(grads) == jax.tree.structure(ref_grads)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
    for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(ref_state)):  # BN statistics
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
    # The same parameter tree when the model is built under the mode (checkpoints, exports).
    with remat_lib.use(mode):
      shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    assert jax.tree.map(lambda x: (x.shape, x.dtype), shapes) == \
        jax.tree.map(lambda x: (x.shape, x.dtype), variables)


def test_remat_really_rematerialises():
  """The blocks' remat shows in the program: `checkpoint` (remat) primitives in the jaxpr."""
  model = models.build("edsr_lite", scale=2, in_channels=1, **EDSR)
  params, model_state = step_lib.split_variables(
      model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1))))
  x = jnp.zeros((2, 8, 8, 1))

  def remats(mode):
    forward = step_lib.model_forward(model, policy=step_lib.ComputePolicy(remat=mode))
    text = str(jax.make_jaxpr(lambda p: forward(p, model_state, x, None)[0])(params))
    return text.count("checkpoint[") + text.count("remat")
  assert remats("none") == 0 < remats("blocks") < remats("full")


def _bf16_sums(jaxpr, found):
  """(terms, shape) of every bfloat16 `reduce_sum` / scatter-add in `jaxpr` and its sub-programs."""
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "reduce_sum" and eqn.invars[0].aval.dtype == jnp.bfloat16:
      shape = eqn.invars[0].aval.shape
      found.append((int(np.prod([shape[a] for a in eqn.params["axes"]])), shape))
    elif name.startswith("scatter") and eqn.invars[-1].aval.dtype == jnp.bfloat16:
      found.append((eqn.invars[-1].aval.size // max(eqn.invars[0].aval.size, 1),
                    eqn.invars[-1].aval.shape))
    for value in eqn.params.values():
      for item in value if isinstance(value, (tuple, list)) else (value,):
        sub = item if hasattr(item, "eqns") else getattr(item, "jaxpr", None)
        if hasattr(sub, "eqns"):
          _bf16_sums(sub, found)
  return found


@pytest.mark.parametrize("name", sorted(ZOO))
def test_bf16_backward_sums_in_float32(name):
  """No gradient of the zoo is a long bfloat16 running sum (they stop growing at 2^8 terms'
  worth: `layers.common.broadcast_like`); the bf16 program really computes in bf16."""
  scale = 4 if name in ("miassr", "ms_gan") else 2
  model = models.build(name, scale=scale, in_channels=1, **ZOO[name])
  params, model_state = step_lib.split_variables(
      jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 16, 1))))
  forward = step_lib.model_forward(model, policy=step_lib.ComputePolicy("bf16"))

  def loss(p, model_state, x):
    y, _ = forward(p, model_state, x, jax.random.key(1))
    return jnp.mean(y)
  x = jax.ShapeDtypeStruct((8, 16, 16, 1), jnp.float32)
  jaxpr = jax.make_jaxpr(jax.grad(loss))(params, model_state, x)
  long_sums = [s for s in _bf16_sums(jaxpr.jaxpr, []) if s[0] > 16]
  assert not long_sums, long_sums
  assert "bf16[8,16,16" in str(jaxpr)


def test_gan_step_under_bf16():
  g_model = models.build("edsr_lite", scale=2, in_channels=1, **EDSR)
  d_model = models.build("wgan_gp_d", in_channels=1, input_size=16, widths=(4, 8),
                         strides=(2, 2), fc_features=8)
  g_tx = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)
  d_tx = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3, b1=0.0, b2=0.9)

  def init():
    g = g_model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
    d = d_model.init(jax.random.key(1), jnp.zeros((1, 16, 16, 1)))["params"]
    return state_lib.init_state({"g": state_lib.init_player(g, g_tx, ema=False),
                                 "d": state_lib.init_player(d, d_tx, ema=False)},
                                jax.random.key(2))
  kind = "vanilla"
  g_loss = objectives.output_loss(
      {"l1": 1.0, "adv": 1e-2},
      adversarial_loss=lambda r, f: adversarial.generator_loss(kind, r, f))
  raw = gan.make_gan_step(g_model, d_model, g_loss, g_tx, d_tx, kind=kind, gp_weight=0.0,
                          loss_threshold=1e8, ema_decay=0.0, update_generator=True,
                          name="gan_bf16")
  mesh = sharding.make_mesh((1, 1), devices=jax.devices()[:1])
  state_sh = sharding.tree_shardings(jax.eval_shape(init), mesh)
  batch_sh = sharding.batch_sharding(mesh)
  step = step_lib.jit_step(raw, state_sh, {"lr": batch_sh, "hr": batch_sh},
                           sharding.replicated(mesh),
                           policy=step_lib.ComputePolicy(precision="bf16"), report_memory=False)
  state = jax.jit(init, out_shardings=state_sh)()
  before = jax.device_get(state)
  state, metrics = step(state, sharding.global_batch(_batch(), mesh), None)
  for player in ("g", "d"):  # both players train, in float32 master weights
    params = state["players"][player]["params"]
    assert _dtypes(params) == {"float32"}
    old = before["players"][player]["params"]
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(jax.device_get(params)),
                                                         jax.tree.leaves(old)))
  assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["loss_d"]))
  assert int(metrics["skipped"]) == 0 and int(metrics["skipped_d"]) == 0
  # The pixel term, in float32 from the float32 cast of G's bf16 output, matches a float32 G.
  sr32 = jax.jit(g_model.apply)({"params": before["players"]["g"]["params"]}, _batch()["lr"])
  np.testing.assert_allclose(float(metrics["loss_l1"]),
                             float(jnp.mean(jnp.abs(sr32 - _batch()["hr"]))), rtol=2e-2)


def test_one_compilation_for_the_memory_line():
  compiles = []

  def listener(event, duration, **kwargs):
    del duration
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append(kwargs.get("fun_name", ""))
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    model = models.build("edsr_lite", scale=2, in_channels=1, **EDSR)
    state, step, mesh = _one_device_step(model, "compile_once", report=False)
    batch = sharding.global_batch(_batch(), mesh)
    compiles.clear()
    for _ in range(3):
      state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert [c for c in compiles if "step" in c] == ["jit(step)"], compiles
  mem = step.memory
  assert mem["peak"] == mem["argument"] + mem["output"] - mem["alias"] + mem["temp"] > 0
  assert mem["alias"] > 0  # the donated state is written in place


def test_config_fields_are_checked_and_old_runs_resume():
  c = config_lib.base_sr_config()
  assert (c.train.precision, c.train.remat) == ("fp32", "none")
  assert step_lib.policy_from_config(c.train) == step_lib.ComputePolicy()
  assert config_checks.PRECISIONS == step_lib.PRECISIONS
  assert config_checks.REMAT_MODES == step_lib.REMAT_MODES
  c.train.precision, c.train.remat = "fp16", "layers"
  problems = " ".join(config_checks._compute_problems(c))  # pylint: disable=protected-access
  assert "train.precision must be one of fp32, bf16, got 'fp16'" in problems
  assert "train.remat must be one of none, blocks, full, got 'layers'" in problems
  # A config.json written before the fields existed resumes with the defaults, not with bf16.
  saved = {"train": {"ema_decay": 0.0}}
  assert not config_checks.config_differences(
      saved, {"train": {"ema_decay": 0.0, "precision": "fp32", "remat": "blocks"}})
  assert config_checks.config_differences(
      saved, {"train": {"ema_decay": 0.0, "precision": "bf16"}}) == [
          ("train.precision", "fp32", "bf16")]


def test_bench_mfu_by_hand():
  # EDSR-lite with 4 features and 1 block at x2 on a batch of 2 LR 6x6 patches: every conv is
  # 3x3; per LR pixel head 1*4, two block convs 2*4*4, body conv 4*4, up-sampler 4*16 (then
  # the pixel shuffle); per HR pixel the tail 4*1.
  model = models.build("edsr_lite", scale=2, in_channels=1, n_feats=4, n_resblocks=1)
  lr_pixels, hr_pixels = 2 * 6 * 6, 2 * 12 * 12
  macs = 9 * (lr_pixels * (1 * 4 + 2 * 4 * 4 + 4 * 4 + 4 * 16) + hr_pixels * 4 * 1)
  assert macs == 85536
  flops = bench_train.train_step_flops(model, batch=2, lr_patch=6, scale=2)
  assert flops == 6 * macs == 513216
  # 1000 steps/s on the 0.45 TFLOP/s development CPU: 0.513 TFLOP/s over 0.45.
  peak = bench_train.peak_tflops("cpu", "fp32")
  assert peak == 0.45
  assert bench_train.mfu(flops, 1000.0, peak) == pytest.approx(513216e3 / 0.45e12)
  assert bench_train.peak_tflops("NVIDIA H200", "bf16") == 989.0
  assert bench_train.peak_tflops("NVIDIA H100 80GB HBM3", "fp32") == 67.0
  assert bench_train.peak_tflops("NVIDIA A100-SXM4-80GB", "bf16") == 312.0
  assert bench_train.peak_tflops("TPU v5 lite", "bf16") is None
  assert bench_train.peak_tflops("TPU v5 lite", "bf16", override=197.0) == 197.0
  assert bench_train.mfu(flops, 1.0, None) is None
  row = bench_train.format_row(dict(
      model="edsr_lite", precision="bf16", remat="blocks", params=1000, compile_s=1.0,
      steps_per_s=2.0, images_per_s=64.0, gflop_per_step=207.0, mfu=0.0123,
      compiled_peak_mb=100.0, peak_mb=200.0, slices_per_s=50.0))
  assert row.count("|") == bench_train.HEADER.splitlines()[0].count("|")
  assert "| 1.2% |" in row


@pytest.mark.parametrize('p_shape, like_shape', [((5,), (3, 4, 2, 5)), ((1, 2, 3, 3), (6, 2, 3, 3)),
                                                 ((3, 1, 1, 5), (3, 4, 2, 5)), ((1,), (2, 3))])
@pytest.mark.parametrize('dot_sum', [True, False])
def test_broadcast_like_gradients_equal_plain_broadcasting(p_shape, like_shape, dot_sum,
                                                           monkeypatch):
  """`broadcast_like`'s own vjp (leading axes summed by a ones-vector product, size-1 axes by a
  sum; `dot_sum`: used for every size) gives numpy broadcasting's gradient, also second order
  (WGAN-GP differentiates a gradient) and in float32 for bfloat16 activations."""
  if dot_sum:
    monkeypatch.setattr(common, 'DOT_SUM_MIN_SIZE', 1)
  rng = np.random.default_rng(0)
  p = jnp.asarray(rng.standard_normal(p_shape), jnp.float32)
  x = jnp.asarray(rng.standard_normal(like_shape), jnp.float32)
  ours = lambda p, x: jnp.sum(jnp.sin(x * common.broadcast_like(p, x) + p))
  plain = lambda p, x: jnp.sum(jnp.sin(x * p + p))
  for order in (jax.grad, lambda f: jax.grad(lambda p, x: jnp.sum(jax.grad(f, 1)(p, x) ** 2))):
    np.testing.assert_allclose(order(ours)(p, x), order(plain)(p, x), rtol=1e-5, atol=1e-5)
  low = jax.grad(lambda p, x: jnp.sum(x * common.broadcast_like(p, x)))(p, x.astype(jnp.bfloat16))
  assert low.dtype == jnp.float32 and low.shape == p.shape
