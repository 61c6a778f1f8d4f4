"""Tests of the adversarial losses and the WGAN-GP gradient penalty (reference spec §7.4).

  .venv/bin/python -m pytest -q tests/test_adversarial.py

Every D and G loss is compared with its formula written out here in numpy. The gradient penalty is
checked in float64 against central finite differences of a small nonlinear critic with explicit
params: the input-gradient norm of each sample, the per-sample split, and the penalty's gradient
w.r.t. the critic's params (reverse over reverse). A critic whose input gradient is zero must give
a penalty of 1 and a zero (not NaN) param gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medsr_jax.losses import adversarial as adv

_RNG = np.random.default_rng(0)
D_REAL = (_RNG.normal(size=(4, 1)) + 1.0).astype(np.float32)
D_FAKE = (_RNG.normal(size=(4, 1)) - 0.5).astype(np.float32)
SCALE_ARRAY = np.array([[2.0], [3.0], [4.0], [1.5]], np.float32)


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


# --- numpy references -------------------------------------------------------------------------


def np_bce(x, z):
  """Mean binary cross-entropy with logits x against target z, in float64."""
  x = np.asarray(x, np.float64)
  return np.mean(np.maximum(x, 0) - x * z + np.log1p(np.exp(-np.abs(x))))


def np_d_loss(kind, r, f, scale=None):
  r, f = np.asarray(r, np.float64), np.asarray(f, np.float64)
  if kind == "vanilla":
    return np_bce(f, 0) + np_bce(r, 1)
  if kind in ("ragan", "ragan_gp"):
    return np_bce(f - r.mean(), 0) + np_bce(r - f.mean(), 1)
  if kind in ("wgan", "wgan_gp"):
    return f.mean() - r.mean()
  if kind == "wgan_l1":
    return np.abs(1 - r).mean() + np.abs(f).mean()
  assert kind == "scalegan"
  return np.abs(r - 1).mean() + np.abs(f - 1 / np.asarray(scale, np.float64)).mean()


def np_g_loss(kind, r, f):
  r, f = np.asarray(r, np.float64), np.asarray(f, np.float64)
  if kind == "vanilla":
    return np_bce(f, 1)
  if kind in ("ragan", "ragan_gp"):
    return 0.5 * (np_bce(f - r.mean(), 1) + np_bce(r - f.mean(), 0))
  if kind in ("wgan", "wgan_gp"):
    return -f.mean()
  return np.abs(1 - f).mean()  # wgan_l1, scalegan


# --- losses ------------------------------------------------------------------------------------


def test_kinds():
  assert adv.KINDS == ("vanilla", "ragan", "wgan", "wgan_gp", "ragan_gp", "wgan_l1", "scalegan")
  assert adv.WGAN_CLIP == 0.01 and adv.GP_WEIGHT == 10.0


@pytest.mark.parametrize("kind", adv.KINDS)
def test_discriminator_loss_matches_numpy(kind):
  scale = 2.0 if kind == "scalegan" else None
  got = adv.discriminator_loss(kind, jnp.asarray(D_REAL), jnp.asarray(D_FAKE), scale=scale)
  assert got.shape == () and got.dtype == jnp.float32
  np.testing.assert_allclose(got, np_d_loss(kind, D_REAL, D_FAKE, scale), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", adv.KINDS)
def test_generator_loss_matches_numpy(kind):
  scale = 2.0 if kind == "scalegan" else None
  got = adv.generator_loss(kind, jnp.asarray(D_REAL), jnp.asarray(D_FAKE), scale=scale)
  assert got.shape == () and got.dtype == jnp.float32
  np.testing.assert_allclose(got, np_g_loss(kind, D_REAL, D_FAKE), rtol=1e-5, atol=1e-6)


def test_scalegan_per_sample_scale():
  got = adv.discriminator_loss("scalegan", D_REAL, D_FAKE, scale=jnp.asarray(SCALE_ARRAY))
  want = np_d_loss("scalegan", D_REAL, D_FAKE, SCALE_ARRAY)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # Not the same as the mean scale: the per-sample target 1/s_n matters.
  assert abs(want - np_d_loss("scalegan", D_REAL, D_FAKE, SCALE_ARRAY.mean())) > 1e-3
  # The G target is 1 whatever the scale.
  np.testing.assert_allclose(adv.generator_loss("scalegan", D_REAL, D_FAKE, scale=SCALE_ARRAY),
                             np.abs(1 - D_FAKE.astype(np.float64)).mean(), rtol=1e-6)


def test_losses_keep_float64(x64):
  r, f = jnp.asarray(D_REAL, jnp.float64), jnp.asarray(D_FAKE, jnp.float64)
  for kind in adv.KINDS:
    d = adv.discriminator_loss(kind, r, f, scale=SCALE_ARRAY)
    g = adv.generator_loss(kind, r, f, scale=SCALE_ARRAY)
    assert d.dtype == g.dtype == jnp.float64, kind
    np.testing.assert_allclose(d, np_d_loss(kind, D_REAL, D_FAKE, SCALE_ARRAY), rtol=1e-12)
    np.testing.assert_allclose(g, np_g_loss(kind, D_REAL, D_FAKE), rtol=1e-12, atol=1e-15)


def test_bce_is_stable_at_large_logits():
  big = jnp.array([[200.0], [-200.0]], jnp.float32)
  d = adv.discriminator_loss("vanilla", big, -big)  # half the samples right, half wrong by 200
  g = adv.generator_loss("vanilla", big, big)
  np.testing.assert_allclose(d, 200.0, rtol=1e-6)
  np.testing.assert_allclose(g, 100.0, rtol=1e-6)
  grad = jax.grad(lambda f: adv.generator_loss("vanilla", big, f))(big)
  assert np.all(np.isfinite(grad))


def test_losses_jit_and_grad():
  fn = jax.jit(jax.grad(lambda f: adv.discriminator_loss("ragan", D_REAL, f), argnums=0))
  got = fn(jnp.asarray(D_FAKE))
  eps = 1e-3  # float32 central difference on one entry
  e = np.zeros_like(D_FAKE)
  e[2, 0] = eps
  fd = (np_d_loss("ragan", D_REAL, D_FAKE + e) - np_d_loss("ragan", D_REAL, D_FAKE - e)) / (2 * eps)
  np.testing.assert_allclose(got[2, 0], fd, rtol=1e-3)


def test_penalty_and_clipping_flags():
  assert [k for k in adv.KINDS if adv.uses_penalty(k)] == ["wgan_gp", "ragan_gp"]
  assert [k for k in adv.KINDS if adv.clips_weights(k)] == ["wgan"]


@pytest.mark.parametrize("fn", [adv.discriminator_loss, adv.generator_loss])
def test_errors(fn):
  with pytest.raises(ValueError, match="unknown adversarial loss kind 'GAN'.*vanilla.*scalegan"):
    fn("GAN", D_REAL, D_FAKE)
  with pytest.raises(ValueError, match="scalegan.*scale") as info:
    fn("scalegan", D_REAL, D_FAKE)
  assert "\n" not in str(info.value)
  for flag in (adv.uses_penalty, adv.clips_weights):
    with pytest.raises(ValueError, match="unknown"):
      flag("WGAN_GP")


def test_clip_weights():
  f32 = lambda a: np.asarray(a, np.float32)
  params = {"conv": {"kernel": jnp.asarray(f32([[-0.5, 0.005], [0.02, -0.003]])),
                     "bias": jnp.asarray(f32([3.0]))},
            "bn": {"scale": jnp.asarray(f32([1.0, -0.001]))}}
  out = adv.clip_weights(params)
  assert jax.tree.structure(out) == jax.tree.structure(params)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(out))
  np.testing.assert_array_equal(out["conv"]["kernel"], f32([[-0.01, 0.005], [0.01, -0.003]]))
  np.testing.assert_array_equal(out["conv"]["bias"], f32([0.01]))
  np.testing.assert_array_equal(out["bn"]["scale"], f32([0.01, -0.001]))
  np.testing.assert_array_equal(adv.clip_weights(params, limit=0.1)["conv"]["kernel"],
                                f32([[-0.1, 0.005], [0.02, -0.003]]))


def test_sample_alpha(x64):
  a = adv.sample_alpha(jax.random.key(0), 64)
  assert a.shape == (64,) and a.dtype == jnp.float32
  assert np.all((a >= 0) & (a < 1)) and np.ptp(a) > 0.5
  np.testing.assert_array_equal(a, adv.sample_alpha(jax.random.key(0), 64))
  assert adv.sample_alpha(jax.random.key(0), 3, jnp.float64).dtype == jnp.float64


# --- gradient penalty --------------------------------------------------------------------------


def toy_params(dtype=np.float64):
  rng = np.random.default_rng(1)
  return {"w1": jnp.asarray(rng.normal(size=(4, 4, 2, 3)) * 0.4, dtype),
          "b1": jnp.asarray(rng.normal(size=(3,)) * 0.1, dtype),
          "w2": jnp.asarray(rng.normal(size=(3, 1)), dtype),
          "b2": jnp.asarray([0.3], dtype)}


def toy_critic(params, x):
  """A 2-layer nonlinear critic: NHWC (N, 4, 4, 2) -> (N, 1), no batch coupling."""
  h = jnp.tanh(jnp.einsum("nhwc,hwck->nk", x, params["w1"]) + params["b1"])
  return h @ params["w2"] + params["b2"]


def toy_batch(n=3):
  rng = np.random.default_rng(2)
  real = rng.normal(size=(n, 4, 4, 2))
  fake = rng.normal(size=(n, 4, 4, 2)) * 0.5
  alpha = np.array([0.25, 0.9, 0.0, 0.6, 1.0][:n])
  return real, fake, alpha


def penalty(params, real, fake, alpha):
  return adv.gradient_penalty(lambda x: toy_critic(params, x), real, fake, alpha)


def fd_input_grad_norms(params, x, eps=1e-6):
  """Each sample's input-gradient norm by central differences over every pixel."""
  k = x[0].size
  basis = np.eye(k).reshape((k,) + x.shape[1:]) * eps
  norms = []
  for xn in x:
    up = np.asarray(toy_critic(params, jnp.asarray(xn + basis)))[:, 0]
    down = np.asarray(toy_critic(params, jnp.asarray(xn - basis)))[:, 0]
    norms.append(np.linalg.norm((up - down) / (2 * eps)))
  return np.array(norms)


def test_penalty_matches_finite_differences(x64):
  params = toy_params()
  real, fake, alpha = toy_batch()
  x_hat = fake * (1 - alpha[:, None, None, None]) + real * alpha[:, None, None, None]
  norms = fd_input_grad_norms(params, x_hat)
  assert np.ptp(norms) > 0.05 and np.all(np.abs(norms - 1) > 0.05)  # a non-trivial case
  got = penalty(params, jnp.asarray(real), jnp.asarray(fake), jnp.asarray(alpha))
  assert got.dtype == jnp.float64
  np.testing.assert_allclose(got, np.mean((norms - 1) ** 2), rtol=1e-7)


def test_penalty_is_per_sample(x64):
  params = toy_params()
  real, fake, alpha = (jnp.asarray(a) for a in toy_batch())
  singles = [penalty(params, real[i:i + 1], fake[i:i + 1], alpha[i:i + 1]) for i in range(3)]
  np.testing.assert_allclose(penalty(params, real, fake, alpha), np.mean(singles), rtol=1e-12)
  # Changing sample 1 changes only its own term.
  real2 = real.at[1].multiply(-2.0)
  single1 = penalty(params, real2[1:2], fake[1:2], alpha[1:2])
  assert abs(single1 - singles[1]) > 1e-3
  np.testing.assert_allclose(penalty(params, real2, fake, alpha),
                             (singles[0] + single1 + singles[2]) / 3, rtol=1e-12)


def test_penalty_param_gradient_matches_finite_differences(x64):
  params = toy_params()
  real, fake, alpha = (jnp.asarray(a) for a in toy_batch())
  value_fn = jax.jit(penalty)
  grads = jax.jit(jax.grad(penalty))(params, real, fake, alpha)
  eps = 1e-5
  for name, index in [("w1", (0, 1, 1, 2)), ("w1", (3, 2, 0, 0)), ("b1", (1,)), ("w2", (2, 0))]:
    up = params | {name: params[name].at[index].add(eps)}
    down = params | {name: params[name].at[index].add(-eps)}
    fd = (value_fn(up, real, fake, alpha) - value_fn(down, real, fake, alpha)) / (2 * eps)
    assert abs(fd) > 1e-3, (name, index)
    np.testing.assert_allclose(grads[name][index], fd, rtol=1e-6, err_msg=f"{name}{index}")
  assert float(grads["b2"][0]) == 0.0  # the output bias does not change the input gradient


def test_penalty_linear_critic_float32():
  w = jnp.asarray(np.random.default_rng(3).normal(size=(4, 4, 2)), jnp.float32)
  critic = lambda x: jnp.sum(x * w, axis=(1, 2, 3))[:, None]
  real, fake, alpha = (jnp.asarray(a, jnp.float32) for a in toy_batch())
  got = adv.gradient_penalty(critic, real, fake, alpha)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, (np.linalg.norm(np.asarray(w, np.float64)) - 1) ** 2, rtol=1e-5)


def test_penalty_zero_input_gradient_is_safe():
  real, fake, alpha = (jnp.asarray(a, jnp.float32) for a in toy_batch(2))
  # A critic that ignores its input, and a linear critic whose weights are zero: both have a zero
  # input gradient, where the norm's own gradient is 0/0.
  constant = lambda p, x: jnp.broadcast_to(p["b"], (x.shape[0], 1))
  linear = lambda p, x: jnp.sum(x * p["w"], axis=(1, 2, 3))[:, None] + p["b"]
  params = {"w": jnp.zeros((4, 4, 2), jnp.float32), "b": jnp.ones((1,), jnp.float32)}
  for critic in (constant, linear):
    fn = lambda p: adv.gradient_penalty(lambda x: critic(p, x), real, fake, alpha)
    value, grads = jax.value_and_grad(fn)(params)
    assert float(value) == 1.0
    for leaf in jax.tree.leaves(grads):
      np.testing.assert_array_equal(leaf, np.zeros_like(leaf))
