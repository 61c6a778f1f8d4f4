"""The sharded train step: same numbers on 1 and 8 devices, one compilation, the loss guard."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from medsr_jax import config_lib, models, sharding
from medsr_jax.trainers import schedule, state as state_lib, step as step_lib

def _g(state):
  """The generator player of a train state."""
  return state["players"]["g"]


TINY = dict(embed_dim=12, num_blocks=1, num_heads=2, growth_rate=6, window_size=4)


def _train_config(**overrides):
  c = config_lib.base_sr_config().train
  c.update(overrides)
  return c


def _batches(n, batch=8, lr_patch=8, scale=2, seed=0):
  rng = np.random.default_rng(seed)
  hr = rng.random((n, batch, lr_patch * scale, lr_patch * scale, 1), dtype=np.float32)
  lr = hr.reshape(n, batch, lr_patch, scale, lr_patch, scale, 1).mean(axis=(3, 5))
  return [{"lr": lr[i], "hr": hr[i]} for i in range(n)]


def _run_steps(mesh, batches, name, train_config=None):
  train_config = train_config or _train_config()
  model = models.build("rdst", scale=2, in_channels=1, **TINY)
  stage = config_lib.stage("l1", steps=100, learning_rate=1e-3)
  tx = step_lib.make_optimizer(train_config, stage)

  def init():
    params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
    player = state_lib.init_player(params, tx, ema=train_config.ema_decay > 0)
    return state_lib.init_state({"g": player}, jax.random.key(1))

  state_sh = sharding.tree_shardings(jax.eval_shape(init), mesh, min_size=64)
  # One init program for every mesh (compiled once, then cached), placed onto the mesh after.
  state = jax.device_put(jax.jit(init)(), state_sh)
  raw = step_lib.make_train_step(step_lib.pixel_objective(model, "l1"), tx,
                                 loss_threshold=train_config.loss_threshold,
                                 ema_decay=train_config.ema_decay, name=name)
  batch_sh = sharding.batch_sharding(mesh)
  step = step_lib.jit_train_step(raw, state_sh, {"lr": batch_sh, "hr": batch_sh},
                                 sharding.replicated(mesh))
  losses = []
  for b in batches:
    state, metrics = step(state, sharding.global_batch(b, mesh))
    losses.append(float(metrics["loss"]))
  return state, np.array(losses)


def test_eight_devices_match_one_device_and_compile_once():
  assert jax.device_count() == 8, "conftest should emulate 8 CPU devices"
  batches = _batches(3)
  single, loss1 = _run_steps(sharding.make_mesh((1, 1), devices=jax.devices()[:1]), batches, "one")
  data8, loss8 = _run_steps(sharding.make_mesh((8, 1)), batches, "data8")
  fsdp, loss_f = _run_steps(sharding.make_mesh((2, 4)), batches, "fsdp")
  np.testing.assert_allclose(loss8, loss1, rtol=0, atol=1e-5)
  np.testing.assert_allclose(loss_f, loss1, rtol=0, atol=1e-5)
  for other in (data8, fsdp):
    for a, b in zip(jax.tree.leaves(_g(other)["params"]), jax.tree.leaves(_g(single)["params"])):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-5)
  # The loss really went down, so the comparison is not between two untouched states.
  assert loss1[-1] < loss1[0]
  for name in ("one", "data8", "fsdp"):
    assert step_lib.TRACE_COUNTS[name] == 1, (name, step_lib.TRACE_COUNTS[name])
  # Under FSDP some parameter is actually split over the 'fsdp' axis.
  specs = [x.sharding.spec for x in jax.tree.leaves(_g(fsdp)["params"])]
  assert any("fsdp" in tuple(s) for s in specs)


def test_loss_guard_skips_bad_steps():
  batches = _batches(2)
  bad = {"lr": batches[1]["lr"].copy(), "hr": batches[1]["hr"].copy()}
  bad["hr"][0, 0, 0, 0] = np.nan
  mesh = sharding.make_mesh((1, 1), devices=jax.devices()[:1])
  before, _ = _run_steps(mesh, batches[:1], "guard_ref", _train_config(ema_decay=0.9))
  after, losses = _run_steps(mesh, [batches[0], bad], "guard", _train_config(ema_decay=0.9))
  assert np.isnan(losses[1])
  assert int(_g(after)["skipped"]) == 1 and int(after["step"]) == 2
  for a, b in zip(jax.tree.leaves(_g(after)["params"]), jax.tree.leaves(_g(before)["params"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for a, b in zip(jax.tree.leaves(_g(after)["ema"]), jax.tree.leaves(_g(before)["ema"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_threshold_guard_counts_large_losses():
  mesh = sharding.make_mesh((1, 1), devices=jax.devices()[:1])
  state, _ = _run_steps(mesh, _batches(2), "threshold", _train_config(loss_threshold=1e-9))
  assert int(_g(state)["skipped"]) == 2


def test_stage_schedule_halves_at_milestones():
  st = config_lib.stage("ft", steps=20_000, learning_rate=1e-4, milestones=(10_000, 15_000, 17_500))
  lr = schedule.stage_schedule(st)
  assert float(lr(0)) == pytest.approx(1e-4)
  assert float(lr(10_000)) == pytest.approx(5e-5)
  assert float(lr(15_000)) == pytest.approx(2.5e-5)
  assert float(lr(19_999)) == pytest.approx(1.25e-5)
  warm = schedule.stage_schedule(config_lib.stage("w", steps=100, learning_rate=1.0,
                                                   warmup_steps=10, milestones=(50,)))
  assert [float(warm(i)) for i in (0, 5, 10, 49, 50)] == pytest.approx([0, 0.5, 1, 1, 0.5])
  stages = [config_lib.stage("a", steps=5, learning_rate=1.0), st]
  assert schedule.stage_index(stages, 4) == 0 and schedule.stage_index(stages, 5) == 1
  cfg = ml_collections.ConfigDict({"train": {"stages": stages, "max_steps": 7}})
  assert config_lib.total_steps(cfg) == 7


@pytest.mark.parametrize("name,options", [
    ("srresnet", dict(n_feats=8, n_resblocks=2)),           # BatchNorm: batch_stats updated
    ("swinir_light", dict(embed_dim=12, num_layers=1, depth=2, num_heads=2, window_size=4)),
])
def test_models_with_state_and_dropout_train(name, options):
  model = models.build(name, scale=2, in_channels=1, **options)
  stage = config_lib.stage("l1", steps=10, learning_rate=1e-3)
  tx = step_lib.make_optimizer(_train_config(), stage)
  params, model_state = step_lib.split_variables(model.init(jax.random.key(0),
                                                            jnp.zeros((1, 8, 8, 1))))
  state = state_lib.init_state(
      {"g": state_lib.init_player(params, tx, ema=False, model_state=model_state)},
      jax.random.key(1))
  step = jax.jit(step_lib.make_train_step(step_lib.pixel_objective(model, "l1"), tx,
                                          loss_threshold=1e8, name=f"state_{name}"))
  before = jax.tree.map(np.asarray, state)
  for b in _batches(2, batch=4):
    state, metrics = step(state, b)
  assert np.isfinite(float(metrics["loss"]))
  assert step_lib.TRACE_COUNTS[f"state_{name}"] == 1
  changed = lambda a, b: any(not np.array_equal(x, y) for x, y in
                             zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert changed(_g(state)["params"], _g(before)["params"])
  if "batch_stats" in model_state:
    assert changed(_g(state)["model_state"]["batch_stats"], _g(before)["model_state"]["batch_stats"])
  # Evaluation uses params + model_state (running statistics in eval mode).
  y = model.apply({"params": _g(state)["params"], **_g(state)["model_state"]}, jnp.ones((1, 8, 8, 1)))
  assert y.shape == (1, 16, 16, 1)
