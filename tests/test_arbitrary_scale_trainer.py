"""The arbitrary-scale trainer (MIASSR, thesis ch. 4): compiles per scale, resume, transfer, configs.

  .venv/bin/python -m pytest -q tests/test_arbitrary_scale_trainer.py

Runs `main` on tiny MIASSR configs (tests/tiny_miassr_config.py) on the embedded sample, one
device (compilation dominates these tests; sharding is the shared loop's and is tested there).
"""

import json
import pathlib

import jax
import numpy as np
import pytest

from medsr_jax import config_lib, export
from medsr_jax import main as main_lib
from medsr_jax.data import arbitrary_scale
from medsr_jax.errors import InputError
from medsr_jax.trainers import arbitrary_scale as trainer_lib
from medsr_jax.trainers import step as step_lib
from experiments import sweep
from tests import shard_fixtures, tiny_miassr_config

REPO = pathlib.Path(__file__).resolve().parents[1]
ONE_DEVICE = "mesh=1x1"


def _rows(workdir):
  return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]


def _per_step(workdir, key):
  return {r["step"]: r[key] for r in _rows(workdir) if key in r}


def _traces(prefix: str) -> dict:
  return {k: v for k, v in step_lib.TRACE_COUNTS.items() if k.startswith(prefix)}


def test_all_thirty_scales_compile_once_each_and_never_after_the_first_pass(tmp_path):
  """Two passes over the thesis' 30 scales: 30 compiles in the first pass, none in the second."""
  config = tiny_miassr_config.get_config(f"scales=thesis,warmup=60,every=1000,{ONE_DEVICE}")
  config.eval.scales = (4.0,)
  config.eval.num_panels = 0
  step_lib.TRACE_COUNTS.clear()
  main_lib.run(config, str(tmp_path))
  traces = _traces("stage0")
  assert len(traces) == 30 and set(traces.values()) == {1}, traces
  scales = _per_step(tmp_path, "scale")
  schedule = arbitrary_scale.schedule_from_config(config.data, config.seed)
  assert [round(scales[k + 1], 4) for k in range(60)] == [schedule(k) for k in range(60)]
  first_pass = {round(scales[k], 4) for k in range(1, 31)}
  assert first_pass == set(arbitrary_scale.THESIS_SCALES)  # every compile in the first pass


def test_resume_continues_the_scale_sequence_with_the_same_losses(tmp_path):
  """Warm-up + WGAN-GP over two scales; killed after step 5 (in the GAN stage) and resumed."""
  arg = f"scales=2.0|4.0,warmup=4,gan_steps=4,gan=wgan_gp,every=2,{ONE_DEVICE}"
  step_lib.TRACE_COUNTS.clear()
  straight = tmp_path / "straight"
  main_lib.run(tiny_miassr_config.get_config(arg), str(straight))
  for stage, suffix in (("stage0", ""), ("stage1", "_dg")):
    traces = _traces(stage)
    assert set(traces.values()) == {1} and all(k.endswith(suffix) for k in traces), traces
    assert len(traces) <= 2
  interrupted = tmp_path / "interrupted"
  main_lib.run(tiny_miassr_config.get_config(arg + ",steps=5"), str(interrupted))
  main_lib.run(tiny_miassr_config.get_config(arg), str(interrupted))
  for key in ("scale", "loss", "loss_l1", "loss_d", "gradient_penalty"):
    got, want = _per_step(interrupted, key), _per_step(straight, key)
    assert sorted(got) == sorted(want) and got, key
    for s in want:
      np.testing.assert_allclose(got[s], want[s], rtol=1e-5, atol=1e-6, err_msg=f"{key} {s}")
  results = json.loads((straight / "results.json").read_text())
  assert sorted(float(s) for s in results["per_scale"]) == [2.0, 3.0]
  assert {"bicubic", "model"} <= set(results) and results["model"]["scales"] == 2
  table = (straight / "results.md").read_text()
  assert "MIASSR" in table and "| x2 |" in table and "| x3 |" in table, table
  exported = json.loads((straight / "export" / "config.json").read_text())
  assert exported["model"] == "miassr" and exported["extra"]["train_scales"] == [2.0, 4.0]
  protocol = exported["extra"]["protocol"]  # what `python -m medsr_jax.evaluate` reads
  assert protocol["scales"] == [2.0, 3.0] and protocol["degradation"] == "bicubic"
  assert protocol["blur"] is bool(json.loads((straight / "config.json").read_text())["data"]["blur"])
  assert list(straight.glob("panel_*_x3.png"))


def test_transfer_freezes_the_feature_extractor_and_trains_the_upsampler(tmp_path, capsys):
  """init_from + train.freeze: the feature extractor keeps the source run's weights exactly
  (ScaleGAN stage: the code's scale-label adversarial loss runs per scale)."""
  source = tmp_path / "source"
  main_lib.run(tiny_miassr_config.get_config(f"warmup=2,every=2,{ONE_DEVICE}"), str(source))
  config = tiny_miassr_config.get_config(f"warmup=0,gan_steps=3,gan=scalegan,every=3,"
                                         f"{ONE_DEVICE}")
  config.train.stages = config.train.stages[1:]
  config.init_from = str(source)
  config.train.freeze = "feature_extractor"
  target = tmp_path / "target"
  main_lib.run(config, str(target))
  assert "frozen: feature_extractor" in capsys.readouterr().out
  _, before, _ = export.load_export(str(source / "export"))
  _, after, _ = export.load_export(str(target / "export"))
  fe = jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)),
                                    before["params"]["feature_extractor"],
                                    after["params"]["feature_extractor"]))
  assert fe and all(fe)
  up = jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)),
                                    before["params"]["meta_upsampler"],
                                    after["params"]["meta_upsampler"]))
  assert not any(up)
  assert set(_per_step(target, "loss_d")) == {1, 2, 3}


def test_multimodal_brats_like_shards_report_every_modality(tmp_path):
  """Four stacked modalities in and out (thesis Fig. 4.7), scores per modality (Table 4.2)."""
  modalities = ("t1ce", "t1", "t2", "flair")
  shard_fixtures.write_shards(tmp_path / "shards", dataset="brats", protocol="miassr",
                              modalities=modalities, with_labels=False,
                              max_slices={"train": 16, "val": 2, "test": 3})
  config = tiny_miassr_config.get_config(f"warmup=2,every=2,{ONE_DEVICE}")
  config.model.in_channels = 4
  config.data.path = str(tmp_path / "shards")
  config.data.modalities = modalities
  main_lib.run(config, str(tmp_path / "run"))
  results = json.loads((tmp_path / "run" / "results.json").read_text())
  assert results["channels"] == list(modalities)
  entry = results["per_scale"]["2"]["model"]
  assert sorted(entry["per_channel"]) == sorted(modalities)
  table = (tmp_path / "run" / "results.md").read_text()
  assert all(f"channel {m}" in table for m in modalities), table


@pytest.mark.parametrize("change, message", [
    (lambda c: setattr(c, "model", config_lib.model_config("edsr_lite", scale=2)), "fixed-scale"),
    (lambda c: c.train.update(freeze="feature_extractr"), "not a parameter path"),
    (lambda c: c.data.update(scales=(1.0, 0.5)), "at least 1"),
])
def test_bad_arbitrary_scale_configs_fail_early(tmp_path, change, message):
  config = tiny_miassr_config.get_config(ONE_DEVICE)
  change(config)
  with pytest.raises((InputError, ValueError), match=message):
    trainer_lib.Trainer(config, tmp_path)


def test_mdsr_trains_at_integer_scales_only(tmp_path):
  config = tiny_miassr_config.get_config(ONE_DEVICE)
  config.model = config_lib.model_config("mdsr", scale=2, n_feats=4, n_resblocks=1)
  config.data.scales = (2.5,)
  with pytest.raises(InputError, match="integer scales"):
    trainer_lib.Trainer(config, tmp_path)


def test_miassr_config_options_and_sweep_grid():
  """The recipe's defaults, the ablation options and the grid (every point a valid config)."""
  path = REPO / "configs" / "miassr.py"
  c = config_lib.load_config(str(path))
  assert c.trainer == "arbitrary_scale" and c.gan.kind == "wgan_gp"
  assert c.gan.discriminator.name == "miassr_d" and c.data.blur
  assert [s.steps for s in c.train.stages] == [100_000, 100_000]
  assert [s.learning_rate for s in c.train.stages] == [1e-4, 2.5e-5]
  assert dict(c.train.stages[1].losses) == {"l1": 1.0, "vgg22": 0.006, "adv": 0.001}
  code = config_lib.load_config(f"{path}:code_gan")
  assert code.gan.discriminator.name == "srgan_d" and code.gan.kind == "vanilla"
  assert dict(config_lib.load_config(f"{path}:stage=gan,eta=inf").train.stages[0].losses) == {
      "vgg22": 1.0}
  assert "gan" not in config_lib.load_config(f"{path}:stage=gan,gamma=0")
  multi = config_lib.load_config(f"{path}:multimodal")
  assert multi.model.in_channels == 4 and multi.gan.discriminator.in_channels == 4
  assert tuple(multi.data.modalities) == ("t1ce", "t1", "t2", "flair")
  cmds = sweep.commands(str(path), "runs/grid/miassr")
  names = [c[4] for c in cmds]
  assert len(set(names)) == len(names) > 30
  branch = [c for c in cmds if c[3].endswith("stage=gan,eta=0.01")][0]
  assert branch[-1] == "--config.init_from=runs/grid/miassr/stage=warmup"
