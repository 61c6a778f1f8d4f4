"""Chapter 3: lesion-focused ROI data, MS-GAN's multi-scale loss (thesis eq. 3.21) and the
lesion-focused trainer end to end (ROI and whole-slice tables, MOS predictions, exact resume).

  .venv/bin/python -m pytest -q tests/test_lesion_focused.py
"""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medsr_jax import config_lib, models
from medsr_jax import main as main_lib
from medsr_jax.data import lesion, sources, transforms
from medsr_jax.errors import InputError
from medsr_jax.io import predictions as predictions_io
from medsr_jax.losses import adversarial, perceptual, pixel
from medsr_jax.trainers import objectives
from medsr_jax.trainers import step as step_lib
from tests import tiny_msgan_config

MS_GAN = models.build("ms_gan", scale=4, in_channels=1, n_feats=8, n_resblocks=1)
CRITIC = models.build("msgan_d", in_channels=1, input_size=16, widths=(4, 4, 8, 8, 8, 8, 8, 8),
                      fc_features=8)


@pytest.fixture(scope="module")
def nets():
  g = MS_GAN.init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))
  d = CRITIC.init(jax.random.key(1), jnp.zeros((1, 16, 16, 1)))
  vgg = jax.jit(models.build("vgg19", scale=1, in_channels=3).init)(
      jax.random.key(2), jnp.zeros((1, 16, 16, 3)))
  rng = np.random.default_rng(0)
  hr = rng.random((2, 16, 16, 1), dtype=np.float32)
  batch = {"lr": jnp.asarray(hr[:, ::4, ::4]), "hr2": jnp.asarray(hr[:, ::2, ::2]),
           "hr": jnp.asarray(hr)}
  return g, d, vgg, batch


def _critic(d):
  return lambda x: CRITIC.apply(d, x)


def _gen_loss(r, f):
  return adversarial.generator_loss("wgan_gp", r, f)


def test_multiscale_loss_is_eq_3_21(nets):
  g, d, vgg, batch = nets
  alpha, beta, lam, eta = 0.7, 1.3, 1e-3, 0.006
  terms = {"mse_x2": alpha, "mse": beta, "adv": lam, "vgg54": eta}
  loss = objectives.output_loss(terms, {"after_relu": True}, adversarial_loss=_gen_loss)
  x2, x4 = MS_GAN.apply(g, batch["lr"])

  @jax.jit
  def both(x2, x4):
    total, aux = loss((x2, x4), batch, {"vgg": vgg}, _critic(d))
    want = (alpha * jnp.mean((x2 - batch["hr2"]) ** 2)
            + beta * jnp.mean((x4 - batch["hr"]) ** 2)
            + lam * -jnp.mean(_critic(d)(x4))
            + eta * perceptual.vgg_loss(vgg, x4, batch["hr"], layer="vgg54", after_relu=True))
    return total, aux, want

  total, aux, want = both(x2, x4)
  np.testing.assert_allclose(total, want, rtol=1e-6)
  np.testing.assert_allclose(aux["loss_mse_x2"], pixel.mse(x2, batch["hr2"]), rtol=1e-6)
  assert set(aux) == {"loss_mse_x2", "loss_mse", "loss_adv", "loss_vgg54"}


def test_adversarial_and_perceptual_terms_reach_only_the_x4_output(nets):
  g, d, vgg, batch = nets
  forward = step_lib.model_forward(MS_GAN, all_outputs=True)

  # vgg22: the same perceptual code path as vgg54 at a fraction of the compile time
  term_sets = ({"adv": 1.0}, {"vgg22": 1.0}, {"mse": 1.0}, {"adv": 1.0, "vgg22": 1.0},
               {"mse_x2": 1.0})

  @jax.jit  # one program for every term set
  def all_grads(params):
    state = {k: v for k, v in g.items() if k != "params"}

    def grad_of(terms):
      loss = objectives.output_loss(terms, {"after_relu": True}, adversarial_loss=_gen_loss)
      return jax.grad(lambda p: loss(forward(p, state, batch["lr"], None)[0], batch,
                                     {"vgg": vgg}, _critic(d))[0])(params)
    return [grad_of(terms) for terms in term_sets]

  grads = all_grads(g["params"])
  x2_layer = ("stage_1", "tail")  # C1: the conv that makes the intermediate x2 image
  for terms, grad in zip(term_sets[:-1], grads[:-1]):
    leaves = jax.tree.leaves(grad[x2_layer[0]][x2_layer[1]])
    assert all(float(jnp.max(jnp.abs(v))) == 0.0 for v in leaves), terms
    assert float(jnp.max(jnp.abs(grad["stage_2"]["tail"]["kernel"]))) > 0, terms
  grad = grads[-1]  # the x2 term does train C1 (and not the x4 tail)
  assert float(jnp.max(jnp.abs(grad["stage_1"]["tail"]["kernel"]))) > 0
  assert float(jnp.max(jnp.abs(grad["stage_2"]["tail"]["kernel"]))) == 0.0


def test_roi_batches_centres_and_noise_units():
  labels = np.zeros((3, 40, 32), np.uint8)
  labels[0, 4:8, 20:24] = 1      # centroid (5.5, 21.5)
  labels[1, 30:34, 2:6] = 2      # not the lesion class: slice centre
  labels[2, 10:12, 10:12] = 1
  images = np.random.default_rng(1).random((3, 40, 32, 1), dtype=np.float32)
  src = sources.ArraySliceSource(images, labels=labels, with_label=True)
  centred = lesion.CentredSource(src, lesion_labels=(1,))
  assert centred[0]["centre"] == (5.5, 21.5) and centred[1]["centre"] is None
  settings = lesion.RoiSettings(size=(16, 16), scale=4.0, lesion_labels=(1,))
  ds = lesion.train_dataset(centred, settings, with_hr2=True, global_batch_size=3, seed=0)
  batch = ds[0]
  assert batch["lr"].shape == (3, 4, 4, 1) and batch["hr2"].shape == (3, 8, 8, 1)
  windows = {tuple(np.asarray(transforms.roi_window((40, 32), (16, 16), centred[i]["centre"])))
             for i in range(3)}
  crops = {(t, l): images[i, t:t + 16, l:l + 16]
           for i in range(3) for (t, l) in [transforms.roi_window((40, 32), (16, 16),
                                                                  centred[i]["centre"])]}
  assert len(windows) == 3
  for hr in batch["hr"]:  # every element is one of the three ROIs (order: the shuffle)
    assert any(np.array_equal(hr, c) for c in crops.values())
  ev = lesion.eval_set(centred, settings)
  assert ev.boxes.tolist()[0] == [0, 14, 16, 16]  # round(5.5) - 8 < 0: clamped to the top
  np.testing.assert_array_equal(ev.crop_rois(ev.hr), ev.hr_roi)
  # sigma in raw units: divided by the intensity divisor before the unitary-DFT noise
  config = tiny_msgan_config.get_config("sigma=20")
  config.data.intensity_divisor = 200.0
  assert lesion.settings_from_config(config).kspace_sigma == pytest.approx(0.1)
  config.data.intensity_divisor = 0.0  # the sample's own raw range (237)
  assert lesion.settings_from_config(config).kspace_sigma == pytest.approx(20 / 237)
  noisy = lesion.eval_set(centred, lesion.RoiSettings(size=(16, 16), scale=4.0,
                                                      lesion_labels=(1,), kspace_sigma=0.1))
  assert not np.allclose(noisy.lr_roi, ev.lr_roi) and np.array_equal(noisy.hr_roi, ev.hr_roi)
  again = lesion.eval_set(centred, lesion.RoiSettings(size=(16, 16), scale=4.0,
                                                      lesion_labels=(1,), kspace_sigma=0.1))
  np.testing.assert_array_equal(noisy.lr_roi, again.lr_roi)  # same test noise for every run


def test_bad_lesion_configs_fail_early(tmp_path):
  c = tiny_msgan_config.get_config()
  c.data.roi.size = (0, 0)  # MS-GAN's x2 term needs ROI batches
  with pytest.raises(InputError, match="mse_x2"):
    main_lib.run(c, str(tmp_path / "a"))
  c = tiny_msgan_config.get_config()
  c.data.roi.centres = "detector"
  with pytest.raises(InputError, match="frozen.detector"):
    main_lib.run(c, str(tmp_path / "b"))
  c = tiny_msgan_config.get_config()
  c.model = config_lib.model_config("srresnet", scale=4, n_feats=8, n_resblocks=1)
  with pytest.raises(InputError, match="multi-scale generator"):
    main_lib.run(c, str(tmp_path / "c"))
  assert not (tmp_path / "a" / "checkpoints").exists()


def _per_step(workdir, key):
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r[key] for r in rows if key in r}


def test_msgan_trains_resumes_exactly_and_writes_chapter3_reports(tmp_path, capsys):
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  main_lib.run(tiny_msgan_config.get_config("steps=4,sigma=20"), str(straight))
  # A kill after the checkpoint at step 2: the same workdir without what came later.
  shutil.copytree(straight, resumed)
  for later in ("checkpoints/4", "export", "results.md"):
    path = resumed / later
    shutil.rmtree(path) if path.is_dir() else path.unlink()
  capsys.readouterr()
  main_lib.run(tiny_msgan_config.get_config("steps=4,sigma=20"), str(resumed))
  assert "resumed from checkpoint at step 2" in capsys.readouterr().out
  for key in ("loss", "loss_mse_x2", "loss_d"):
    got, want = _per_step(resumed, key), _per_step(straight, key)
    assert sorted(got) == sorted(want) and got, key
    for s in want:
      assert got[s] == want[s], (key, s)
  assert sorted(_per_step(straight, "loss_d")) == [3, 4]  # the critic trains after the warm-up
  results = (straight / "results.md").read_text()
  for row in ("| bicubic |", "| bilinear |", "| bilinear+nlm |", "| ms_gan (warm-up) |",
              "| MS-GAN |", "ROI PSNR"):
    assert row in results, results
  per_slice = json.loads((straight / "results.json").read_text())
  n = len(per_slice["ids"])
  assert len(per_slice["MS-GAN"]["roi"]["psnr"]) == n == len(per_slice["roi_boxes"])
  assert (straight / "boxplot_roi.png").is_file()
  assert list(straight.glob("roi_panel_*.png"))
  preds = predictions_io.read_predictions(straight)
  assert preds["sr"].shape == (n, 16, 16, 1) and preds["method"] == "MS-GAN"


def test_detector_centres_for_roi_crops(tmp_path):
  """data.roi.centres='detector': the detector's normalised output on each LR slice, in HR
  pixels (half-pixel convention), as `detect.centres_for_source` gives the ROI pipeline."""
  from medsr_jax import detect, evaluate, export  # pylint: disable=import-outside-toplevel
  from medsr_jax.metrics import roi_detection  # pylint: disable=import-outside-toplevel
  kwargs = dict(input_size=16, widths=(4, 8), fc_features=(8,))
  model = models.build("lesion_detector", scale=1, in_channels=1, **kwargs)
  variables = model.init(jax.random.key(3), jnp.zeros((1, 16, 16, 1)))
  export.save_export(str(tmp_path / "ld"), model_name="lesion_detector", model_kwargs=kwargs,
                     scale=1, in_channels=1, params=variables)
  images = np.random.default_rng(2).random((3, 32, 24, 1), dtype=np.float32)
  got = detect.centres_for_source(str(tmp_path / "ld"), sources.ArraySliceSource(images), 4.0)
  lr = lesion.lr_of(images, 4.0)
  pred = evaluate.Predictor(model, 3)(variables, lr)
  want = lesion.scale_centres(roi_detection.centres_from_normalised(pred, lr.shape[1:3]),
                              lr.shape[1:3], (32, 24))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # normalised (x, y) -> HR pixels directly: the same point
  np.testing.assert_allclose(got[:, 0], pred[:, 1] * 32 - 0.5, rtol=1e-5)
