"""Tests of evaluation at any scale (`medsr_jax.evaluate.scales`, `python -m medsr_jax.evaluate`).

Thesis ch. 4 protocol (§4.3.4, §4.4): per scale its own blurred bicubic LR, GT resized to
int(H // s * s), ceil(s) border; meta models at s, MDSR / fixed-scale models through the
up-and-down step. Tiny models (a few hundred parameters) on 12x10 to 20x16 slices with 1-3
scales, so every compilation takes a fraction of a second.

  .venv/bin/python -m pytest -q tests/test_evaluate_scales.py
"""

import importlib
import json
import pathlib
import re
import shutil
import subprocess
import sys

from absl import flags
import numpy as np
import pytest

from medsr_jax import config_lib, errors, evaluate, export, models
from medsr_jax.data import arbitrary_scale, degradation, pipeline
from medsr_jax.errors import InputError
from medsr_jax.evaluate import scales

cli = importlib.import_module("medsr_jax.evaluate.__main__")

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESNET_TINY = dict(n_feats=4, n_resblocks=1)
META_TINY = dict(feature_options={"n_resblocks": 1, "n_feats": 4}, weight_hidden=16)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _images(n=2, h=12, w=10, c=1, seed=0):
  return np.random.default_rng(seed).random((n, h, w, c)).astype(np.float32)


@pytest.fixture(scope="module")
def fixed_x2():
  model = models.build("edsr_lite", scale=2, in_channels=1, **RESNET_TINY)
  return model, models.random_variables(model, 0)


@pytest.fixture(scope="module")
def meta():
  model = models.build("miassr", scale=4.0, in_channels=1, **META_TINY)
  return model, models.random_variables(model, 1)


# ----------------------------------------------------------------------------------------------
# parse_scales


def test_parse_scales_thesis_range():
  got = scales.parse_scales("1.1:4.0:0.1")
  assert got == arbitrary_scale.THESIS_SCALES and len(got) == 30
  assert got == tuple(round(0.1 * k, 1) for k in range(11, 41))
  assert scales.parse_scales("1:2:0.25") == (1.0, 1.25, 1.5, 1.75, 2.0)
  assert scales.parse_scales("1.5:4:1") == (1.5, 2.5, 3.5)
  assert scales.parse_scales(" 2:2:1 ") == (2.0,)


def test_parse_scales_lists():
  assert scales.parse_scales("1.5,2,2.5") == (1.5, 2.0, 2.5)
  assert scales.parse_scales(" 4 , 1.5 ") == (4.0, 1.5)
  assert scales.parse_scales("2.0000004") == (2.0,)
  assert all(isinstance(s, float) for s in scales.parse_scales("2,3"))


@pytest.mark.parametrize("text", ["", "  ", "a", "1.5,,2", "0,2", "-1.5", "2,2", "nan",
                                  "inf", "4:1:0.1", "1:4:0", "1:4:-0.5", "1:4", "1:x:0.1",
                                  "0:2:0.5", "1:100000:0.01"])
def test_parse_scales_errors(text):
  with pytest.raises(InputError, match="^scales: "):
    scales.parse_scales(text)


# ----------------------------------------------------------------------------------------------
# predict_at_scale / up_and_down


def test_up_and_down_by_hand(fixed_x2):
  model, variables = fixed_x2
  images = _images()                                    # 12 x 10 slices
  lr, gt = pipeline.make_test_pairs(images, 1.5, blur=True)
  assert lr.shape[1:3] == (8, 6) and gt.shape[1:3] == (12, 9)
  sr2 = evaluate.Predictor(model, 2)(variables, lr)      # the x2 model's 16 x 12 output
  assert sr2.shape[1:3] == (16, 12)
  expected = degradation.resize_bicubic(sr2, (int(16 // 2 * 1.5), int(12 // 2 * 1.5)))
  np.testing.assert_allclose(scales.up_and_down(sr2, 2, 1.5), expected, rtol=0, atol=0)
  cache = {}
  got = scales.predict_at_scale(model, variables, lr, 1.5, batch_size=2, cache=cache)
  assert got.shape == gt.shape == expected.shape
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
  # At the model's own scale the output is returned as it is.
  assert scales.up_and_down(sr2, 2, 2.0) is sr2
  lr2, gt2 = pipeline.make_test_pairs(images, 2.0, blur=True)
  got2 = scales.predict_at_scale(model, variables, lr2, 2.0, batch_size=2, cache=cache)
  np.testing.assert_allclose(got2, evaluate.Predictor(model, 2)(variables, lr2), atol=1e-6)
  assert got2.shape == gt2.shape
  # One Predictor for every scale of a fixed-scale model; repeated calls do not recompile.
  (predictor,) = cache.values()
  traces = predictor.traces
  scales.predict_at_scale(model, variables, lr, 1.5, batch_size=2, cache=cache)
  assert predictor.traces == traces and len(cache) == 1


def test_fixed_scale_model_refuses_larger_scales(fixed_x2):
  model, variables = fixed_x2
  lr = _images(1, 4, 4)
  with pytest.raises(InputError, match=r"^model x2 cannot super-resolve x2\.5$"):
    scales.predict_at_scale(model, variables, lr, 2.5)
  lines = []
  with pytest.raises(InputError, match="cannot super-resolve x3"):
    scales.evaluate_scales(model, variables, _images(), [1.5, 3.0], log=lines.append)
  assert not lines  # checked before the first scale ran
  with pytest.raises(InputError, match="below 1"):
    scales.predict_at_scale(model, variables, lr, 0.5)
  with pytest.raises(InputError, match="positive integer"):
    scales.up_and_down(lr, 0, 1.5)


def test_mdsr_runs_at_ceil_scale_then_up_and_down():
  model = models.build("mdsr", scale=2, in_channels=1, **RESNET_TINY)
  variables = models.random_variables(model, 2)
  lr, gt = pipeline.make_test_pairs(_images(), 2.5, blur=True)
  sr3 = evaluate.Predictor(model, 2, scale=3)(variables, lr)
  got = scales.predict_at_scale(model, variables, lr, 2.5, batch_size=2)
  np.testing.assert_allclose(got, scales.up_and_down(sr3, 3, 2.5), atol=1e-6)
  assert got.shape == gt.shape
  only_x2 = models.build("mdsr", scale=2, in_channels=1, scales=(2,), **RESNET_TINY)
  with pytest.raises(InputError, match="no x3 branch"):
    scales.predict_at_scale(only_x2, {}, lr, 2.5)


def test_meta_model_runs_at_the_scale(meta):
  model, variables = meta
  lr, gt = pipeline.make_test_pairs(_images(), 2.5, blur=True)
  got = scales.predict_at_scale(model, variables, lr, 2.5, batch_size=2)
  np.testing.assert_allclose(got, evaluate.Predictor(model, 2, scale=2.5)(variables, lr),
                             atol=1e-6)
  assert got.shape == gt.shape


# ----------------------------------------------------------------------------------------------
# evaluate_scales / scale_table_markdown


def test_evaluate_scales_per_channel_and_subject():
  model = models.build("edsr_lite", scale=2, in_channels=2, **RESNET_TINY)
  variables = models.random_variables(model, 3)
  images = _images(3, 20, 16, 2, seed=4)
  subjects, lines = ["a", "a", "b"], []
  result = scales.evaluate_scales(model, variables, images, (1.5, 2.0), blur=True, batch_size=4,
                                  subjects=subjects, channel_names=("t1", "t2"),
                                  slice_index=[5, 6, 7], log=lines.append)
  json.loads(json.dumps(result))  # JSON-ready
  assert result["scales"] == [1.5, 2.0] and result["channels"] == ["t1", "t2"]
  assert result["slice_index"] == [5, 6, 7] and result["subjects"] == subjects
  assert set(result["per_scale"]) == {"1.5", "2"}
  assert result["per_scale"]["1.5"]["lr_hw"] == [13, 10]
  assert result["per_scale"]["1.5"]["gt_hw"] == [19, 15]
  assert result["per_scale"]["1.5"]["up_and_down_from"] == 2
  assert re.fullmatch(r"x1\.5: LR 13x10 -> 19x15, 3 slices, \d+\.\ds", lines[0]), lines
  assert any("up-and-down" in n for n in result["notes"])
  for s in (1.5, 2.0):
    lr, gt = pipeline.make_test_pairs(images, s, blur=True)
    preds = {"model": scales.predict_at_scale(model, variables, lr, s),
             "bicubic": evaluate.bicubic_baseline(lr, gt.shape[1:3])}
    for method, pred in preds.items():
      entry = result["per_scale"][f"{s:g}"][method]
      pooled = evaluate.score_slices(gt, pred, s)
      np.testing.assert_allclose(entry["psnr"], pooled.psnr, rtol=1e-6)
      np.testing.assert_allclose(entry["ssim_mean"], pooled.summary()["ssim_mean"], rtol=1e-6)
      for c, name in enumerate(("t1", "t2")):
        alone = evaluate.score_slices(gt[..., c:c + 1], pred[..., c:c + 1], s)
        ch = entry["per_channel"][name]
        np.testing.assert_allclose(ch["psnr"], alone.psnr, rtol=1e-6)
        np.testing.assert_allclose(ch["ssim"], alone.ssim, rtol=1e-6)
        assert ch["psnr_std"] == pytest.approx(float(np.std(alone.psnr)))
        assert ch["per_subject"]["b"]["psnr_mean"] == pytest.approx(alone.psnr[2])
      assert entry["per_subject"]["a"]["psnr_mean"] == pytest.approx(pooled.psnr[:2].mean())
      assert entry["per_subject"]["a"]["slices"] == 2 and entry["slices"] == 3

  table = scales.scale_table_markdown(result, model_label="EDSR-lite")
  assert table.count("| x1.5 | 13x10 | ") == 3 and table.count("| mean over scales |") == 3
  assert "| scale | LR | bicubic PSNR | EDSR-lite PSNR | bicubic SSIM | EDSR-lite SSIM |" in table
  assert "channel t1:" in table and "channel t2:" in table
  model_means = [result["per_scale"][k]["model"]["psnr_mean"] for k in ("1.5", "2")]
  mean_row = next(line for line in table.splitlines() if line.startswith("| mean over"))
  assert f"| {np.mean(model_means):.2f} |" in mean_row
  with pytest.raises(InputError, match="2 names for 1 channels"):
    scales.evaluate_scales(models.build("edsr_lite", scale=2, **RESNET_TINY), {},
                           _images(), [2.0], channel_names=["a", "b"])


def test_plot_vs_scale_is_atomic(tmp_path, monkeypatch):
  fake = {"per_scale": {k: {"scale": float(k), "bicubic": {"psnr_mean": 30 - float(k),
                                                           "ssim_mean": 0.9},
                            "model": {"psnr_mean": 32 - float(k), "ssim_mean": 0.95}}
                        for k in ("1.5", "2", "3")}}
  path = tmp_path / "plots" / "curve.png"
  scales.plot_vs_scale({"a": fake, "b": fake}, path)
  assert path.read_bytes().startswith(PNG_SIGNATURE)
  with pytest.raises(InputError, match="metrics"):
    scales.plot_vs_scale({"a": fake}, tmp_path / "bad.png", metrics=("fid",))
  with pytest.raises(KeyError):
    scales.plot_vs_scale({"a": {"per_scale": {"2": {"scale": 2.0}}}}, tmp_path / "half.png")
  from matplotlib import figure  # pylint: disable=import-outside-toplevel

  def failing_savefig(self, f, **kwargs):
    del self, kwargs
    f.write(PNG_SIGNATURE)
    raise RuntimeError("disk full")

  monkeypatch.setattr(figure.Figure, "savefig", failing_savefig)
  with pytest.raises(RuntimeError, match="disk full"):  # a failed write leaves nothing behind
    scales.plot_vs_scale({"a": fake}, path)
  assert path.read_bytes().startswith(PNG_SIGNATURE)  # the old plot is still whole
  assert sorted(p.name for p in tmp_path.rglob("*")) == ["curve.png", "plots"]


# ----------------------------------------------------------------------------------------------
# The command line.


@pytest.fixture(scope="module")
def meta_run(tmp_path_factory, meta):
  """A finished run of the tiny MIASSR: config.json (sample data at 20x16, data.scales 2 and 3)
  and export/."""
  from medsr_jax import main  # pylint: disable=import-outside-toplevel
  run = tmp_path_factory.mktemp("runs") / "miassr_tiny"
  run.mkdir()
  c = config_lib.base_sr_config()
  c.trainer = "arbitrary_scale"
  c.model = config_lib.model_config("miassr", scale=4, **META_TINY)
  c.data.crop_hw = (20, 16)
  c.data.scales = (2.0, 3.0)
  c.data.blur = True
  main.write_config(c, run)
  model, variables = meta
  export.save_export(str(run / "export"), model_name="miassr", model_kwargs=META_TINY,
                     scale=4.0, in_channels=1, params=variables)
  return run


def _copy_run(run, where):
  where.mkdir(parents=True)
  shutil.copy(run / "config.json", where / "config.json")
  shutil.copytree(run / "export", where / "export")
  return where


def _cli(args, log=None):
  """The command in-process: its flags on a private FlagValues, errors through cli_main."""
  fv = flags.FlagValues()
  cli.define_flags(fv)
  fv(["evaluate", *args])
  return errors.cli_main(lambda: cli.run_flags(fv, command="test", log=log))


def test_cli_single_run_defaults(meta_run, tmp_path):
  run = _copy_run(meta_run, tmp_path / "miassr_a")
  lines = []
  results = _cli([f"--workdir={run}", "--split=val", "--batch_size=4"], log=lines.append)
  out = run / "eval" / "val"
  assert sorted(p.name for p in out.iterdir()) == ["results.json", "results.md", "scales.png"]
  data = json.loads((out / "results.json").read_text())
  assert data == json.loads(json.dumps(results["miassr_a"]))
  assert data["protocol"]["scales"] == [2.0, 3.0]  # from the run's config
  assert data["protocol"]["blur"] is True
  assert data["model"] == "miassr" and data["split"] == "val" and data["command"] == "test"
  assert data["export"] == str((run / "export").resolve())
  for key in ("2", "3"):
    for method in ("bicubic", "model"):
      entry = data["per_scale"][key][method]
      assert len(entry["psnr"]) == len(entry["ssim"]) == entry["slices"] == 8
      assert set(entry["per_subject"]) == {"colin27"}
      assert entry["per_subject"]["colin27"]["psnr_mean"] == pytest.approx(entry["psnr_mean"])
  md = (out / "results.md").read_text()
  assert [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| x")] == [
      "x2", "x3"]
  assert "| mean over scales |" in md
  assert (out / "scales.png").read_bytes().startswith(PNG_SIGNATURE)
  assert any(re.match(r"  x2: LR 10x8 -> 20x16, 8 slices", line) for line in lines), lines


def test_cli_compares_runs(meta_run, tmp_path):
  a = _copy_run(meta_run, tmp_path / "first")
  b = _copy_run(meta_run, tmp_path / "second")
  results = _cli([f"--workdir={a},{b}", "--split=val", "--scales=2.5", "--blur=false"],
                 log=lambda _: None)
  assert list(results) == ["first", "second"]
  for run in (a, b):
    data = json.loads((run / "eval" / "val" / "results.json").read_text())
    assert data["protocol"]["scales"] == [2.5] and data["protocol"]["blur"] is False
  assert (a / "eval" / "val" / "scales_compare.png").read_bytes().startswith(PNG_SIGNATURE)
  assert not (b / "eval" / "val" / "scales_compare.png").exists()
  # Same weights and data: the same scores.
  first, second = (results[k]["per_scale"]["2.5"] for k in ("first", "second"))
  assert first["model"] == second["model"] and first["bicubic"] == second["bicubic"]


@pytest.mark.parametrize("args, message", [
    (["--split=val"], "no export/ directory"),
    (["--split=testing"], "unknown split"),
    (["--scales=4:1:0.5"], "stop 1 is below start 4"),
    (["--scales=2", "--model_dir=MISSING"], "model directory not found"),
])
def test_cli_bad_input_writes_nothing(meta_run, tmp_path, capsys, args, message):
  run = tmp_path / "broken"
  run.mkdir()
  shutil.copy(meta_run / "config.json", run / "config.json")
  if "--split=testing" in args or any(a.startswith("--scales=4") for a in args):
    shutil.copytree(meta_run / "export", run / "export")
  args = [a.replace("MISSING", str(tmp_path / "missing")) for a in args]
  with pytest.raises(SystemExit) as e:
    _cli([f"--workdir={run}", *args])
  assert e.value.code == errors.EXIT_BAD_INPUT
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: ") and message in err and "\n" not in err
  assert not (run / "eval").exists()


def test_cli_subprocess(meta_run, tmp_path):
  """The real command: flags defined when it runs, outputs in --out, exit 2 on bad input."""
  out, plot = tmp_path / "out", tmp_path / "figs" / "curve.png"
  r = subprocess.run([sys.executable, "-m", "medsr_jax.evaluate", f"--workdir={meta_run}",
                      "--split=val", "--scales=1.5", f"--out={out}", f"--plot={plot}"],
                     cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert r.returncode == 0, r.stderr
  assert "x1.5: LR 13x10 -> 19x15, 8 slices" in r.stdout
  assert "| x1.5 | 13x10 |" in r.stdout
  assert sorted(p.name for p in out.iterdir()) == ["results.json", "results.md"]
  assert plot.read_bytes().startswith(PNG_SIGNATURE)
  data = json.loads((out / "results.json").read_text())
  assert data["command"].startswith("python -m medsr_jax.evaluate --workdir=")
  assert not (meta_run / "eval").exists()
  # Importing the command defines no flag on the global FLAGS.
  assert "plot" not in flags.FLAGS and "scales" not in flags.FLAGS


def test_cli_model_dir_on_the_sample(fixed_x2, tmp_path):
  """--model_dir alone: the export on the embedded sample (160x128 slices), blurred LR, outputs
  in EXPORT/eval/<split>; the fixed x2 model reaches x1.5 through the up-and-down step."""
  model, variables = fixed_x2
  exp = tmp_path / "edsr_x2"
  export.save_export(str(exp), model_name="edsr_lite", model_kwargs=RESNET_TINY, scale=2,
                     in_channels=1, params=variables)
  results = _cli([f"--model_dir={exp}", "--split=val", "--scales=1.5,2"], log=lambda _: None)
  data = json.loads((exp / "eval" / "val" / "results.json").read_text())
  assert list(results) == ["edsr_x2"] and data["protocol"]["blur"] is True
  assert data["workdir"] is None and data["provenance"]["config_source"] == "export"
  assert data["hr_hw"] == [160, 128] and data["per_scale"]["1.5"]["gt_hw"] == [159, 127]
  assert data["per_scale"]["1.5"]["up_and_down_from"] == 2
  assert (exp / "eval" / "val" / "scales.png").is_file()
  with pytest.raises(SystemExit):
    _cli([f"--model_dir={exp}", "--scales=1.5,2.5"])
