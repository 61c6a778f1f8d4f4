"""The GAN trainer: the two-player step against a hand-written update (1 and 8 devices), n_critic,
WGAN clipping, the per-player guard, loss terms from the config, and `main` end to end with resume.
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from medsr_jax import config_lib, export, models, sharding
from medsr_jax import main as main_lib
from medsr_jax.errors import InputError
from medsr_jax.losses import adversarial, pixel
from medsr_jax.trainers import gan, objectives, sr
from medsr_jax.trainers import state as state_lib
from medsr_jax.trainers import step as step_lib
from tests import tiny_gan_config

G_MODEL = models.build("edsr_lite", scale=2, in_channels=1, n_feats=8, n_resblocks=1)
D_MODEL = models.build("wgan_gp_d", in_channels=1, input_size=16,
                       widths=(4, 4, 8, 8, 8, 8, 8, 8), fc_features=8)
TERMS = {"l1": 1.0, "adv": 1e-2}


def _txs():
  g_tx = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)
  d_tx = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3, b1=0.0, b2=0.9)
  return g_tx, d_tx


def _batches(n, seed=0):
  rng = np.random.default_rng(seed)
  hr = rng.random((n, 8, 16, 16, 1), dtype=np.float32)
  lr = hr.reshape(n, 8, 8, 2, 8, 2, 1).mean(axis=(3, 5))
  return [{"lr": lr[i], "hr": hr[i]} for i in range(n)]


def _init_state():
  g_tx, d_tx = _txs()
  g = G_MODEL.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
  d = D_MODEL.init(jax.random.key(1), jnp.zeros((1, 16, 16, 1)))["params"]
  players = {"g": state_lib.init_player(g, g_tx, ema=False),
             "d": state_lib.init_player(d, d_tx, ema=False)}
  return state_lib.init_state(players, jax.random.key(2))


def _gan_step(kind, *, update_generator=True, name, loss_threshold=1e8):
  g_tx, d_tx = _txs()
  terms = dict(TERMS)
  g_loss = objectives.output_loss(
      terms, adversarial_loss=lambda r, f: adversarial.generator_loss(kind, r, f))
  return gan.make_gan_step(G_MODEL, D_MODEL, g_loss, g_tx, d_tx, kind=kind,
                           gp_weight=adversarial.GP_WEIGHT, loss_threshold=loss_threshold,
                           ema_decay=0.0, update_generator=update_generator, name=name)


def _run_sharded(mesh, batches, kind, name):
  state0 = jax.eval_shape(_init_state)
  state_sh = sharding.tree_shardings(state0, mesh, min_size=64)
  state = jax.device_put(jax.jit(_init_state)(), state_sh)
  batch_sh = sharding.batch_sharding(mesh)
  step = step_lib.jit_step(_gan_step(kind, name=name), state_sh, {"lr": batch_sh, "hr": batch_sh},
                           sharding.replicated(mesh))
  for b in batches:
    state, metrics = step(state, sharding.global_batch(b, mesh), None)
  return jax.device_get(state), jax.device_get(metrics)


def _reference_update(state, batch, kind):
  """D then G, written out with the two optax optimisers (the documented order)."""
  g_tx, d_tx = _txs()
  g, d = state["players"]["g"], state["players"]["d"]
  rng, _, d_rng = jax.random.split(jax.random.wrap_key_data(state["rng"]), 3)
  lr, hr = jnp.asarray(batch["lr"]), jnp.asarray(batch["hr"])
  fake = G_MODEL.apply({"params": g["params"]}, lr)

  def d_loss(p):
    critic = lambda x: D_MODEL.apply({"params": p}, x)
    alpha = adversarial.sample_alpha(d_rng, hr.shape[0])
    return (adversarial.discriminator_loss(kind, critic(hr), critic(fake))
            + adversarial.GP_WEIGHT * adversarial.gradient_penalty(critic, hr, fake, alpha))

  updates, d_opt = d_tx.update(jax.grad(d_loss)(d["params"]), d["opt_state"], d["params"])
  d_params = optax.apply_updates(d["params"], updates)

  def g_loss(p):
    sr_img = G_MODEL.apply({"params": p}, lr)
    critic = lambda x: D_MODEL.apply({"params": d_params}, x)
    return (pixel.l1(sr_img, hr)
            + 1e-2 * adversarial.generator_loss(kind, critic(hr), critic(sr_img)))

  updates, g_opt = g_tx.update(jax.grad(g_loss)(g["params"]), g["opt_state"], g["params"])
  g_params = optax.apply_updates(g["params"], updates)
  players = {"g": dict(g, params=g_params, opt_state=g_opt),
             "d": dict(d, params=d_params, opt_state=d_opt)}
  return dict(state, rng=jax.random.key_data(rng), players=players)


def _assert_trees_close(a, b, atol=2e-5):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=atol)


def test_two_player_step_matches_reference_on_one_and_eight_devices():
  batches = _batches(2)
  expected = _init_state()
  for b in batches:
    expected = _reference_update(expected, b, "wgan_gp")
  one, metrics = _run_sharded(sharding.make_mesh((1, 1), devices=jax.devices()[:1]), batches,
                              "wgan_gp", "gan_one")
  eight, _ = _run_sharded(sharding.make_mesh((8, 1)), batches, "wgan_gp", "gan_eight")
  for got in (one, eight):
    for p in ("g", "d"):
      _assert_trees_close(got["players"][p]["params"], expected["players"][p]["params"])
  assert float(metrics["gradient_penalty"]) > 0 and np.isfinite(float(metrics["loss_d"]))
  assert step_lib.TRACE_COUNTS["gan_one"] == 1 and step_lib.TRACE_COUNTS["gan_eight"] == 1
  initial = _init_state()
  assert not np.allclose(one["players"]["d"]["params"]["fc2"]["kernel"],
                         initial["players"]["d"]["params"]["fc2"]["kernel"])


def test_critic_only_step_and_wgan_clipping():
  state = _init_state()
  g_before = jax.device_get(state["players"]["g"])
  step = jax.jit(_gan_step("wgan", update_generator=False, name="critic_only"))
  for b in _batches(2):
    state, metrics = step(state, b)
  assert "loss" not in metrics and "loss_d" in metrics
  _assert_trees_close(state["players"]["g"]["params"], g_before["params"], atol=0)
  assert int(state["step"]) == 2
  leaves = jax.tree.leaves(state["players"]["d"]["params"])
  assert max(float(jnp.max(jnp.abs(x))) for x in leaves) <= adversarial.WGAN_CLIP


def test_guard_counts_each_player():
  state = _init_state()
  before = jax.device_get(state)
  bad = _batches(1)[0]
  bad["hr"][0, 0, 0, 0] = np.nan
  state, metrics = jax.jit(_gan_step("wgan_gp", name="guard_gan"))(state, bad)
  assert int(metrics["skipped_d"]) == 1 and int(metrics["skipped"]) == 1
  for p in ("g", "d"):
    assert int(state["players"][p]["skipped"]) == 1
    _assert_trees_close(state["players"][p]["params"], before["players"][p]["params"], atol=0)


def test_generator_objective_weights_named_terms():
  vgg = models.build("vgg19", layers=("vgg22",))
  vgg_vars = models.random_variables(vgg, seed=0)
  batch = _batches(1)[0]
  params = G_MODEL.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
  terms = {"mse": 1.0, "vgg22": 0.5}
  objective = objectives.generator_objective(G_MODEL, terms)
  total, (aux, _) = jax.jit(objective)(params, {}, batch, None, {objectives.VGG: vgg_vars})
  assert set(aux) == {"loss_mse", "loss_vgg22"}
  np.testing.assert_allclose(total, aux["loss_mse"] + 0.5 * aux["loss_vgg22"], rtol=1e-6)
  assert float(aux["loss_vgg22"]) > 0
  stage = config_lib.stage("s", steps=1, learning_rate=1.0, losses={"l1": 1, "vgg54": 0})
  assert objectives.stage_terms(stage) == {"l1": 1.0}
  assert objectives.stage_terms(config_lib.stage("s", steps=1, learning_rate=1.0,
                                                 loss="mse")) == {"mse": 1.0}


@pytest.mark.parametrize("change,message", [
    (lambda c: setattr(c.data, "scales", (1.5, 2.0)), "data.scales"),
    (lambda c: c.train.stages[1].losses.update({"perceptual_typo": 1.0}), "perceptual_typo"),
    (lambda c: setattr(c.gan, "kind", "scalegan"), "scalegan"),
    (lambda c: setattr(c.gan.discriminator.kwargs, "input_size", 32), "input_size"),
])
def test_bad_gan_configs_fail_early(tmp_path, change, message):
  c = tiny_gan_config.get_config()
  change(c)
  with pytest.raises(InputError, match=message):
    gan.GANTrainer(c, tmp_path)


def test_sr_trainer_rejects_adversarial_terms_and_missing_vgg(tmp_path):
  c = tiny_gan_config.get_config()
  c.trainer = "sr"
  with pytest.raises(InputError, match="adv"):
    sr.SRTrainer(c, tmp_path)
  c = tiny_gan_config.get_config()
  c.demo_without_vgg = False
  with pytest.raises(InputError, match="frozen.vgg"):
    gan.GANTrainer(c, tmp_path)


def _per_step(workdir, key):
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r[key] for r in rows if key in r}


def test_main_trains_resumes_both_players_and_reports_warmup(tmp_path, capsys):
  interrupted = tmp_path / "interrupted"
  main_lib.run(tiny_gan_config.get_config("steps=4"), str(interrupted))  # first GAN ckpt: 4
  assert (interrupted / "export_warmup" / "config.json").is_file()
  capsys.readouterr()
  main_lib.run(tiny_gan_config.get_config("steps=6"), str(interrupted))
  out = capsys.readouterr().out
  assert "resumed from checkpoint at step 4" in out and "WITHOUT its VGG term" in out
  straight = tmp_path / "straight"
  main_lib.run(tiny_gan_config.get_config("steps=6"), str(straight))
  for key in ("loss", "loss_d", "gradient_penalty"):
    got, want = _per_step(interrupted, key), _per_step(straight, key)
    assert sorted(got) == sorted(want) and got, key
    for s in want:
      np.testing.assert_allclose(got[s], want[s], rtol=1e-5, atol=1e-6, err_msg=f"{key} {s}")
  assert sorted(_per_step(straight, "loss_d")) == [3, 4, 5, 6]  # D trains in the GAN stage only
  results = (interrupted / "results.md").read_text()
  for row in ("| bicubic |", "| edsr_lite (warm-up) |", "| edsr_lite |", "Best validation PSNR"):
    assert row in results, results
  exported = json.loads((interrupted / "export" / "config.json").read_text())
  assert exported["model"] == "edsr_lite"
  assert pathlib.Path(interrupted / "export" / "params.npz").is_file()
  _every_player_starts_from_the_run(straight, tmp_path / "branch")


def _every_player_starts_from_the_run(run_dir, workdir):
  """init_from_players='all': G and D start from the run's latest checkpoint, not from init."""
  config = tiny_gan_config.get_config("steps=6")
  config.init_from, config.init_from_players = str(run_dir), "all"
  branched = gan.GANTrainer(config, workdir)
  fresh = gan.GANTrainer(tiny_gan_config.get_config("steps=6"), workdir / "fresh")
  _, final_g, _ = export.load_export(str(run_dir / "export"))
  _assert_trees_close(branched.state["players"]["g"]["params"], final_g["params"], atol=0)
  d_branched = branched.state["players"]["d"]["params"]["fc2"]["kernel"]
  assert not np.allclose(d_branched, fresh.state["players"]["d"]["params"]["fc2"]["kernel"])
  assert int(branched.state["step"]) == 0
