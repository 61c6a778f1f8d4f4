"""The GAN trainer (`config.trainer = 'gan'`): generator 'g' and discriminator 'd' players.

  python -m medsr_jax.main --config=configs/srgan.py --workdir=runs/srgan
  python -m medsr_jax.main --config=configs/srgan.py:gan=wgan_gp --workdir=runs/srgan_wgan_gp

Stages without an 'adv' term are warm-up stages: the generator alone, exactly the SR trainer's
step. A stage with 'adv' runs, per iteration (reference spec §3.3 and §7.4; thesis §3.2.4):

  1. fake = G(lr) with G's current params (no gradient into G here);
  2. D loss = `adversarial.discriminator_loss(kind, D(hr), D(fake))`
     (+ `config.gan.gp_weight` * `adversarial.gradient_penalty` for 'wgan_gp' / 'ragan_gp',
     the critic's input gradient taken with `jax.grad`, per sample, alpha ~ U[0, 1));
     D's guarded update (+ weight clipping to +-0.01 after the step for 'wgan');
  3. G loss = the stage's weighted terms, whose 'adv' term is
     `adversarial.generator_loss(kind, D'(hr), D'(G(lr)))` with the freshly updated D';
     G's guarded update.

`config.gan.n_critic` > 1 runs n_critic - 1 D-only iterations (steps 1-2, each on its own batch)
before every D+G iteration; the choice is made on the host, and each step kind (G-only, D-only,
D+G) is compiled once per stage. The loss guard (not finite or > 1e8) applies to each player on
its own and is counted per player (`skipped_d`, `skipped`). A discriminator with BatchNorm runs in
training mode for every call (batch statistics), as the reference's D always does; only the D
step's two calls (fake, then real) update its running statistics.

Discriminator optimiser (`config.gan.d_optimizer`): 'gp' = Adam(1e-5, betas (0, 0.9)) at a
constant rate, the reference's choice for every kind with 'GP'; 'generator' = the generator's
settings and stage schedule, the reference's choice otherwise; 'auto' (default) picks by kind.

At the start of the first adversarial stage the warm-up generator is exported to
`workdir/export_warmup/`; the final table reports bicubic, the warm-up generator and the GAN
generator, and `results.md` names the checkpoint with the best validation PSNR.

Run `python -m pytest tests/test_gan.py`.
"""

from __future__ import annotations

import pathlib
from typing import Any, Optional

import jax
import jax.numpy as jnp
import optax

from medsr_jax import evaluate, export, models, sharding
from medsr_jax.errors import InputError
from medsr_jax.io import text_files
from medsr_jax.losses import adversarial
from medsr_jax.trainers import objectives, schedule, sr
from medsr_jax.trainers import state as state_lib
from medsr_jax.trainers import step as step_lib

G, D = state_lib.GENERATOR, state_lib.DISCRIMINATOR
D_OPTIMIZERS = ("auto", "gp", "generator")
WARMUP_EXPORT = "export_warmup"


def discriminator_forward(model):
  """`critic(params, model_state, x) -> (logits, new_model_state)` in training mode."""
  forward = step_lib.model_forward(model)
  return lambda params, model_state, x: forward(params, model_state, x, None)


def make_d_update(d_model, kind: str, tx, *, gp_weight: float, loss_threshold: float,
                  loss_scale: Optional[float] = None):
  """`update(d_player, hr, fake, rng) -> (d_player, metrics)`: one guarded D step.

  `loss_scale` (HR size / LR size of the batch) is the fake label of 'scalegan'."""
  critic = discriminator_forward(d_model)
  penalty = adversarial.uses_penalty(kind)
  post_update = adversarial.clip_weights if adversarial.clips_weights(kind) else None

  def d_objective(params, model_state, hr, fake, rng):
    d_fake, model_state = critic(params, model_state, fake)
    d_real, model_state = critic(params, model_state, hr)
    loss = adversarial.discriminator_loss(kind, d_real, d_fake, scale=loss_scale)
    aux = {"d_real": jnp.mean(d_real), "d_fake": jnp.mean(d_fake)}
    if penalty:
      alpha = adversarial.sample_alpha(rng, hr.shape[0], hr.dtype)
      gp = adversarial.gradient_penalty(lambda x: critic(params, model_state, x)[0], hr, fake,
                                        alpha)
      aux["gradient_penalty"] = gp
      loss = loss + gp_weight * gp
    return loss, (aux, model_state)

  def update(player, hr, fake, rng):
    (loss, (aux, model_state)), grads = jax.value_and_grad(d_objective, has_aux=True)(
        player["params"], player["model_state"], hr, jax.lax.stop_gradient(fake), rng)
    new, ok = state_lib.guarded_update(player, grads, loss, tx, loss_threshold=loss_threshold,
                                       new_model_state=model_state, post_update=post_update)
    metrics = dict(loss_d=loss, skipped_d=(~ok).astype(jnp.int32),
                   learning_rate_d=state_lib.learning_rate(player), **aux)
    return new, metrics

  return update


def make_gan_step(g_model, d_model, g_loss, g_tx, d_tx, *, kind: str, gp_weight: float,
                  loss_threshold: float, ema_decay: float, update_generator: bool, name: str,
                  all_outputs: bool = False, scale: Optional[float] = None,
                  loss_scale: Optional[float] = None):
  """`step(state, batch, frozen) -> (state, metrics)`: D update, then (optionally) G update.

  `g_loss(sr, batch, frozen, critic)` is the generator's `objectives.output_loss`. The generator
  runs forward once per iteration: its output feeds the D update (without gradient) and, through
  the saved `jax.vjp`, the G update against the freshly updated D. With `all_outputs` `g_loss`
  gets every output of a multi-scale generator (MS-GAN's (x2, x4)); D sees the final image only.
  `scale` is the static scale a scale-taking generator runs at (arbitrary-scale training: the
  batch's); `loss_scale` the batch's HR / LR size ratio for 'scalegan'.
  """
  g_forward = step_lib.model_forward(g_model, scale=scale, all_outputs=all_outputs)
  d_update = make_d_update(d_model, kind, d_tx, gp_weight=gp_weight,
                           loss_threshold=loss_threshold, loss_scale=loss_scale)
  critic = discriminator_forward(d_model)

  def step(state, batch, frozen=None):
    step_lib.TRACE_COUNTS[name] += 1  # Python side effect: runs only while tracing.
    rng, g_rng, d_rng = jax.random.split(jax.random.wrap_key_data(state["rng"]), 3)
    g, d = state["players"][G], state["players"][D]

    def generate(params):
      return g_forward(params, g["model_state"], batch["lr"], g_rng)

    def final(outputs):
      return outputs[-1] if all_outputs and isinstance(outputs, (tuple, list)) else outputs

    if not update_generator:
      fake, _ = generate(g["params"])
      d, metrics = d_update(d, batch["hr"], final(fake), d_rng)
    else:
      fake, pullback, model_state = jax.vjp(generate, g["params"], has_aux=True)
      d, metrics = d_update(d, batch["hr"], final(fake), d_rng)

      def d_fresh(x):
        return critic(d["params"], d["model_state"], x)[0]

      (loss, aux), d_sr = jax.value_and_grad(g_loss, has_aux=True)(
          fake, batch, frozen or {}, d_fresh)
      (grads,) = pullback(d_sr)
      g, ok = state_lib.guarded_update(g, grads, loss, g_tx, loss_threshold=loss_threshold,
                                       new_model_state=model_state, ema_decay=ema_decay)
      metrics.update(loss=loss, grad_norm=optax.global_norm(grads),
                     learning_rate=state_lib.learning_rate(state["players"][G]),
                     skipped=(~ok).astype(jnp.int32), **aux)
    metrics.update(step_lib.batch_scale(batch))
    new_state = dict(state, step=state["step"] + 1, rng=jax.random.key_data(rng),
                     players={**state["players"], G: g, D: d})
    return new_state, metrics

  return step


class GANTrainer(sr.SRTrainer):
  """`sr.SRTrainer` plus the discriminator player and the adversarial stages."""

  name = "gan"
  loss_terms = sr.SRTrainer.loss_terms + (objectives.ADVERSARIAL_TERM,)

  def __init__(self, config, workdir: pathlib.Path):
    self.d_model = sr.build_model(config.gan.discriminator)
    super().__init__(config, workdir)

  def _check_intermediate(self) -> None:  # runs in SRTrainer.__init__ once the ROI is known
    super()._check_intermediate()
    self._check_discriminator_size()

  def check_config(self) -> None:
    super().check_config()
    gan = self.config.gan
    if gan.kind not in adversarial.KINDS:
      raise InputError(f"gan.kind {gan.kind!r} is not one of {', '.join(adversarial.KINDS)}")
    if gan.kind == "scalegan" and not self.per_batch_scales:
      raise InputError("gan.kind 'scalegan' needs per-batch scales: it belongs to the "
                       "arbitrary-scale trainer, not to fixed-scale 'gan'")
    if gan.d_optimizer not in D_OPTIMIZERS:
      raise InputError(f"gan.d_optimizer must be one of {D_OPTIMIZERS}, got {gan.d_optimizer!r}")
    if int(gan.n_critic) < 1:
      raise InputError(f"gan.n_critic must be >= 1, got {gan.n_critic}")
    if not any(objectives.ADVERSARIAL_TERM in objectives.stage_terms(s)
               for s in self.config.train.stages):
      raise InputError("trainer 'gan' has no stage with an 'adv' loss term: add one "
                       "(losses={..., 'adv': 1e-3}) or use trainer 'sr'")

  def _check_discriminator_size(self) -> None:
    h, w = self.hr_train_hw()
    d_size = self.config.gan.discriminator.kwargs.get("input_size", h)
    if d_size != h or h != w:
      raise InputError(f"the discriminator takes {d_size}x{d_size} inputs but the HR training "
                       f"images are {h}x{w}: set --config.gan.discriminator.kwargs.input_size={h}"
                       + ("" if h == w else " and use a square ROI"))

  # ----- players ----------------------------------------------------------------------------
  def optimizer(self, player: str, stage_idx: int):
    if player == G:
      return super().optimizer(player, stage_idx)
    gan = self.config.gan
    choice = gan.d_optimizer
    if choice == "auto":
      choice = "gp" if adversarial.uses_penalty(gan.kind) else "generator"
    if choice == "generator":
      return super().optimizer(G, stage_idx)
    return optax.inject_hyperparams(optax.adam)(
        learning_rate=float(gan.d_learning_rate), b1=float(gan.d_b1), b2=float(gan.d_b2),
        eps=float(self.config.train.eps))

  def init_players(self, rng, start):
    g_rng, d_rng = jax.random.split(rng)
    players = super().init_players(g_rng, start)
    dummy = jnp.zeros((1, *self.hr_train_hw(), self.config.model.in_channels), jnp.float32)
    params, model_state = step_lib.split_variables(self.d_model.init(d_rng, dummy))
    players[D] = state_lib.init_player(params, self.optimizer(D, 0), ema=False,
                                       model_state=model_state)
    return players

  # ----- steps ------------------------------------------------------------------------------
  def _is_adversarial(self, stage_idx: int) -> bool:
    return objectives.ADVERSARIAL_TERM in objectives.stage_terms(self.stages[stage_idx])

  def train_step(self, stage_idx: int, step: int):
    if not self._is_adversarial(stage_idx):
      return super().train_step(stage_idx, step)
    first, _ = schedule.stage_bounds(self.stages)[stage_idx]
    n_critic = int(self.config.gan.n_critic)
    update_generator = (step - first + 1) % n_critic == 0
    scale = self.step_scale(step)
    key = (stage_idx, scale, update_generator)
    if key not in self._steps:
      gan, train = self.config.gan, self.config.train
      kind = gan.kind
      terms = objectives.stage_terms(self.stages[stage_idx])
      loss_scale = self.batch_size_ratio(step)
      raw = make_gan_step(
          self.model, self.d_model,
          objectives.output_loss(
              terms, self.config.train.get("perceptual", {}),
              adversarial_loss=lambda r, f: adversarial.generator_loss(kind, r, f,
                                                                       scale=loss_scale),
              unet_options=self.config.train.get("unet_loss", {})),
          self.optimizer(G, stage_idx), self.optimizer(D, stage_idx), kind=kind,
          gp_weight=float(gan.gp_weight), loss_threshold=train.loss_threshold,
          ema_decay=train.ema_decay, update_generator=update_generator,
          name=self.step_name(stage_idx, scale, "_dg" if update_generator else "_d"),
          all_outputs=objectives.INTERMEDIATE_TERM in terms, scale=scale, loss_scale=loss_scale)
      self._steps[key] = self.jit(raw)
    return self._steps[key]

  def batch_size_ratio(self, step: int) -> float:
    """HR size / LR size of the batches at `step` (ScaleGAN's fake label is its inverse)."""
    del step
    return float(self.scale)

  def export_stage_end(self, stage_idx: int) -> None:
    """The generator before the first adversarial stage is the warm-up generator."""
    nxt = stage_idx + 1
    if self._is_adversarial(nxt) and not any(self._is_adversarial(i) for i in range(nxt)):
      self.export(self.workdir / WARMUP_EXPORT, self.counter("step"))

  def progress_fields(self, metrics: dict) -> dict:
    fields = super().progress_fields(metrics) if "loss" in metrics else {}
    if "loss_d" in metrics:
      fields["loss_d"] = float(metrics["loss_d"])
    return fields

  def describe(self) -> str:
    n_d = models.count_params(self.state["players"][D]["params"])
    gan = self.config.gan
    return (f"{super().describe()}; discriminator {gan.discriminator.name} ({n_d:,} parameters), "
            f"{gan.kind}, n_critic {gan.n_critic}")

  # ----- evaluation and export --------------------------------------------------------------
  def extra_generators(self) -> dict:
    """The warm-up generator (exported when the first adversarial stage began), if any."""
    warmup = self.workdir / WARMUP_EXPORT
    if not (warmup / export.CONFIG_FILE).is_file():
      return {}
    _, variables, _ = export.load_export(str(warmup))
    return {f"{self.config.model.name} (warm-up)": variables}

  def final_evaluation(self, writer, step: int) -> dict[str, Any]:
    summary = super().final_evaluation(writer, step)
    if jax.process_index() == 0 and self.best_checkpoint is not None:
      note = (f"\nBest validation PSNR: checkpoint {self.best_checkpoint} "
              f"({self.workdir / 'checkpoints' / str(self.best_checkpoint)}); the export is the "
              f"generator at the end of the run (step {step}).\n")
      text_files.append_text_atomic(self.workdir / "results.md", note, what="results")
      print(note.strip(), flush=True)
    return summary

  def export_extra(self) -> dict:
    return {**super().export_extra(), "skipped_steps_d": self.counter("skipped", D),
            "discriminator": self.config.gan.discriminator.name, "gan_kind": self.config.gan.kind}


Trainer = GANTrainer
