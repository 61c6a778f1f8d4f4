"""Tests of `python -m medsr_jax.evaluate`'s results.json (schema `medsr_jax.eval.results` v1).

A tiny arbitrary-scale model on 20x16 sample slices: the document validates against
`evaluate/results_schema.json`, records the provenance (config / data sha256, code version),
is byte-identical when the evaluation is run again, and carries Dice / MFD when a U-Net is
given; the validator rejects broken documents; bad metric requests fail in one line.

  .venv/bin/python -m pytest -q tests/test_evaluate_results.py
"""

import copy
import hashlib
import importlib
import json

from absl import flags
import numpy as np
import pytest

from medsr_jax import config_lib, errors, export, models
from medsr_jax.data import sample
from medsr_jax.evaluate import results as results_lib
from tests import host_variables

cli = importlib.import_module("medsr_jax.evaluate.__main__")

META_TINY = dict(feature_options={"n_resblocks": 1, "n_feats": 4}, weight_hidden=16)
UNET_TINY = dict(num_classes=4, stem_features=4, stage_widths=(4, 8, 8, 8),
                 blocks_per_stage=(1, 1, 1, 1), decoder_channels=(8, 8, 8, 8, 4))


def _cli(args, log=None):
  fv = flags.FlagValues()
  cli.define_flags(fv)
  fv(["evaluate", *args])
  return errors.cli_main(lambda: cli.run_flags(fv, command="test", log=log or (lambda _: None)))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """A finished tiny MIASSR run (config.json on sample slices of 20x16, export/) and a random
  tiny unet_seg export beside it."""
  from medsr_jax import main  # pylint: disable=import-outside-toplevel
  root = tmp_path_factory.mktemp("eval_results")
  run = root / "miassr_tiny"
  run.mkdir()
  c = config_lib.base_sr_config()
  c.trainer = "arbitrary_scale"
  c.model = config_lib.model_config("miassr", scale=4, **META_TINY)
  c.data.crop_hw = (20, 16)
  c.data.scales = (2.0, 3.0)
  main.write_config(c, run)
  model = models.build("miassr", scale=4.0, in_channels=1, **META_TINY)
  export.save_export(str(run / "export"), model_name="miassr", model_kwargs=META_TINY, scale=4.0,
                     in_channels=1, params=models.random_variables(model, 1))
  unet = models.build("unet_seg", in_channels=1, **UNET_TINY)
  export.save_export(str(root / "unet"), model_name="unet_seg", model_kwargs=UNET_TINY, scale=1,
                     in_channels=1, params=host_variables.he_normal(unet, seed=0))
  return run


@pytest.fixture(scope="module")
def evaluated(run_dir):
  """The document of `--split=val --metrics=psnr,ssim,dice,mfd` and the results.json bytes."""
  docs = _cli([f"--workdir={run_dir}", "--split=val", "--batch_size=4",
               "--metrics=dice,mfd", f"--unet={run_dir.parent / 'unet'}"])
  return docs["miassr_tiny"], (run_dir / "eval" / "val" / "results.json").read_bytes()


def test_document_validates_and_records_provenance(run_dir, evaluated):
  doc, raw = evaluated
  assert json.loads(raw) == json.loads(json.dumps(doc))
  assert results_lib.validate(doc) == []
  assert doc["schema"] == "medsr_jax.eval.results" and doc["schema_version"] == 1
  assert doc["metrics"] == ["psnr", "ssim", "dice", "mfd"]
  prov = doc["provenance"]
  config = json.loads((run_dir / "config.json").read_text())
  assert prov["config_sha256"] == results_lib.canonical_sha256(config)
  assert prov["config_source"] == "run" and prov["data"]["source"] == "sample"
  assert prov["data"]["manifest_sha256"] == hashlib.sha256(
      (sample.SAMPLE_DIR / sample.T1_FILE).read_bytes()
      + (sample.SAMPLE_DIR / sample.TISSUE_FILE).read_bytes()).hexdigest()
  assert prov["code_version"].startswith("0.")
  assert doc["protocol"]["scales"] == [2.0, 3.0] and doc["protocol"]["border"] == "ceil(scale)"
  # Per slice, per subject and pooled.
  entry = doc["per_scale"]["2"]["model"]
  assert len(entry["psnr"]) == entry["slices"] == doc["slices"] == 8
  assert entry["psnr_mean"] == pytest.approx(np.mean(entry["psnr"]))
  assert doc["pooled"]["model"]["psnr_mean"] == pytest.approx(
      np.mean([doc["per_scale"][k]["model"]["psnr_mean"] for k in ("2", "3")]))
  assert "seconds" not in doc["per_scale"]["2"]  # nothing depends on the clock


def test_dice_at_the_scales_whose_gt_is_hr(run_dir, evaluated):
  doc, _ = evaluated
  dice = doc["per_scale"]["2"]["dice"]  # 20x16 -> 10x8 -> 20x16: GT is the HR slice
  assert dice["dataset"] == "oasis" and dice["methods"][0] == "HR"
  assert set(dice["results"]) >= {"bicubic", "miassr"}
  assert dice["results"]["miassr"]["mfd"]["value"] is not None
  assert "dice" not in doc["per_scale"]["3"]  # 20x16 -> 6x5 -> 18x15: not the HR grid
  md = (run_dir / "eval" / "val" / "results.md").read_text()
  assert "Dice at x2:" in md and "Dice at x3:" not in md


def test_rerun_is_byte_identical(run_dir, evaluated):
  _, first = evaluated
  _cli([f"--workdir={run_dir}", "--split=val", "--batch_size=4", "--metrics=dice,mfd",
        f"--unet={run_dir.parent / 'unet'}"])
  assert (run_dir / "eval" / "val" / "results.json").read_bytes() == first


def test_validator_rejects_broken_documents(evaluated):
  doc, _ = evaluated
  cases = {
      "missing 'provenance'": lambda d: d.pop("provenance"),
      "unexpected key 'extra'": lambda d: d.update(extra=1),
      "does not match": lambda d: d["provenance"].update(config_sha256="abc"),
      "expected number": lambda d: d["per_scale"]["2"]["model"]["psnr"].__setitem__(0, "x"),
      "is not one of": lambda d: d.update(split="training"),
      "expected 1": lambda d: d.update(schema_version=2),
      "missing 'per_subject'": lambda d: d["per_scale"]["3"]["bicubic"].pop("per_subject"),
  }
  for message, damage in cases.items():
    broken = copy.deepcopy(doc)
    damage(broken)
    problems = results_lib.validate(broken)
    assert problems and any(message in p for p in problems), (message, problems)
    with pytest.raises(ValueError, match="invalid medsr_jax.eval.results document"):
      results_lib.check(broken)


def test_parse_metrics():
  assert cli.parse_metrics("fid") == ("psnr", "ssim", "fid")
  assert cli.parse_metrics(" MFD , psnr,dice ") == ("psnr", "ssim", "dice", "mfd")
  for bad, message in (("psnr,lpips", "unknown metric 'lpips'"), ("fid,fid", "listed twice")):
    with pytest.raises(errors.InputError, match=message):
      cli.parse_metrics(bad)


@pytest.mark.parametrize("args, message", [
    (["--metrics=fid"], "needs the pytorch-fid Inception weights"),
    (["--metrics=fid", "--fid_weights=MISSING"], "MISSING"),
    (["--metrics=dice"], "needs a trained unet_seg export"),
    (["--metrics=psnr,bleu"], "unknown metric 'bleu'"),
])
def test_bad_metric_requests_fail_in_one_line(run_dir, tmp_path, capsys, monkeypatch, args,
                                              message):
  monkeypatch.delenv(cli.FID_WEIGHTS_ENV, raising=False)
  out = tmp_path / "out"
  missing = str(tmp_path / "missing.npz")
  args = [a.replace("MISSING", missing) for a in args]
  with pytest.raises(SystemExit) as e:
    _cli([f"--workdir={run_dir}", "--split=val", f"--out={out}", *args])
  assert e.value.code == errors.EXIT_BAD_INPUT
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: ") and message.replace("MISSING", missing) in err, err
  assert "\n" not in err and not out.exists()


def test_model_dir_follows_the_protocol_its_export_recorded(run_dir, tmp_path):
  """An export records its run's test protocol (`SRTrainer.test_protocol`); evaluating the export
  alone (on the embedded sample) uses that blur and those scales."""
  _, variables, config = export.load_export(str(run_dir / "export"))
  exp = tmp_path / "recorded"
  export.save_export(str(exp), model_name="miassr", model_kwargs=META_TINY, scale=4.0,
                     in_channels=1, params=variables,
                     extra={"protocol": {"blur": False, "scales": [2.5], "degradation": "bicubic"}})
  doc = _cli([f"--model_dir={exp}", "--split=val"])["recorded"]
  assert doc["protocol"]["blur"] is False and doc["protocol"]["scales"] == [2.5]
  assert doc["provenance"]["config_source"] == "export" and results_lib.validate(doc) == []
  assert doc["hr_hw"] == [160, 128] and config["model"] == "miassr"


def test_fid_per_subject_in_the_document(run_dir, tmp_path, monkeypatch):
  """--metrics=fid: a FID entry per method and scale (per subject, per channel), the pooled mean
  and the FID table. The Inception itself is tested in tests/test_fid.py; here a cheap stand-in
  (8 x 8 block means of the resized slices) gives features that depend on the image."""
  from medsr_jax.metrics import fid  # pylint: disable=import-outside-toplevel
  loaded = []
  monkeypatch.setattr(fid, "load_fid_inception", lambda path: loaded.append(path) or {"fake": np.zeros(1)})

  def block_means(variables, images, batch_size=16):
    assert set(variables) == {"fake"} and batch_size == 4
    x = np.asarray(fid.preprocess(np.asarray(images)))[:, :296, :296, 0]
    return x.reshape(len(x), 8, 37, 8, 37).mean(axis=(2, 4)).reshape(len(x), -1)

  monkeypatch.setattr(fid, "inception_features", block_means)
  weights = tmp_path / "fid_inception.npz"
  doc = _cli([f"--workdir={run_dir}", "--split=val", "--scales=2", "--batch_size=4",
              "--metrics=fid", f"--fid_weights={weights}", f"--out={tmp_path / 'out'}"])
  doc = doc["miassr_tiny"]
  assert loaded == [str(weights)]
  assert results_lib.validate(doc) == [] and doc["metrics"] == ["psnr", "ssim", "fid"]
  values = {}
  for method in ("bicubic", "model"):
    entry = doc["per_scale"]["2"][method]["fid"]
    assert entry["subjects"] == 1 and set(entry["per_subject"]) == {"colin27"}
    assert entry["value"] == pytest.approx(entry["per_subject"]["colin27"]) and entry["value"] > 0
    assert doc["pooled"][method]["fid_mean"] == pytest.approx(entry["value"])
    values[method] = entry["value"]
  assert values["bicubic"] != values["model"]
  table = (tmp_path / "out" / "results.md").read_text().split("FID (pool3")[1]
  assert f"| x2 | {values['bicubic']:.2f} | {values['model']:.2f} |" in table
