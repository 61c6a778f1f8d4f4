"""End to end: `main` trains on the embedded sample, resumes exactly, evaluates and exports."""

import json
import pathlib
import subprocess
import sys

import nibabel as nib
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
import numpy as np

from medsr_jax import config_lib
from medsr_jax import export
from medsr_jax import infer
from medsr_jax import main as main_lib
from tests import tiny_config as tiny_config_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def tiny_config(steps):
  return tiny_config_lib.get_config(f"steps={steps}")


def _losses(workdir):
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  steps = [r["step"] for r in rows if "loss" in r]
  assert len(steps) == len(set(steps)), f"a step was logged twice: {steps}"
  return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_resume_continues_exactly(tmp_path, capsys):
  interrupted = tmp_path / "interrupted"
  main_lib.run(tiny_config(steps=4), str(interrupted))       # stops at step 4 (checkpoints 3, 4)
  ckpts = sorted(p.name for p in (interrupted / "checkpoints").iterdir() if p.name.isdigit())
  assert ckpts[-1] == "4"
  with open(interrupted / "metrics.jsonl", "a") as f:     # as if it died after logging step 5
    f.write('{"step": 5, "time": 0, "loss": 123.0}\n{"step": 6, "ti')
  capsys.readouterr()
  main_lib.run(tiny_config(steps=9), str(interrupted))       # resumes at 4, crosses a stage
  assert "resumed from checkpoint at step 4" in capsys.readouterr().out
  straight = tmp_path / "straight"
  main_lib.run(tiny_config(steps=9), str(straight))
  resumed, reference = _losses(interrupted), _losses(straight)
  assert sorted(resumed) == list(range(1, 10)), "every step logged exactly once"
  for s in range(1, 10):
    np.testing.assert_allclose(resumed[s], reference[s], rtol=0, atol=1e-6, err_msg=f"step {s}")
  for f in ("results.md", "results.json", "config.json", "export/params.npz",
            "export/config.json"):
    assert (interrupted / f).exists(), f
  events = EventAccumulator(str(interrupted / "tensorboard"))
  events.Reload()
  assert "loss" in events.Tags()["scalars"] and "val_psnr" in events.Tags()["scalars"]
  assert any(t.startswith("test/panel_") for t in events.Tags()["images"])
  assert list(interrupted.glob("panel_*.png"))
  # Checkpoints: the latest three plus the best validated one survive.
  ckpts = sorted(int(p.name) for p in (interrupted / "checkpoints").iterdir() if p.name.isdigit())
  assert ckpts[-1] == 9 and len(ckpts) >= 3
  rows = [json.loads(l) for l in (interrupted / "metrics.jsonl").read_text().splitlines()]
  val = {r["step"]: r["val_psnr"] for r in rows if r.get("val_psnr") is not None}
  assert sorted(val) == [3, 4, 6, 9]
  assert max(val, key=val.get) in ckpts
  _exported_model_super_resolves_a_volume(interrupted / "export", tmp_path)


def _exported_model_super_resolves_a_volume(model_dir, tmp_path):
  volume = np.random.default_rng(0).integers(0, 1000, size=(20, 24, 3)).astype(np.int16)
  affine = np.diag([1.0, 1.0, 2.0, 1.0])
  source, target = tmp_path / "in.nii.gz", tmp_path / "out.nii.gz"
  nib.save(nib.Nifti1Image(volume, affine), source)
  infer.run(str(model_dir), str(source), str(target))
  out = nib.load(target)
  assert out.shape == (40, 48, 3)
  np.testing.assert_allclose(out.header.get_zooms(), (0.5, 0.5, 2.0))


def test_cli_rejects_unknown_trainer(tmp_path):
  cmd = [sys.executable, "-m", "medsr_jax.main", "--config=configs/rdst.py:demo",
         f"--workdir={tmp_path}", "--config.trainer=nonexistent"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr
  assert "unknown trainer" in proc.stderr.strip().splitlines()[-1]


def test_cli_rejects_missing_config_file(tmp_path):
  cmd = [sys.executable, "-m", "medsr_jax.main", "--config=configs/nope.py:demo",
         f"--workdir={tmp_path}"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  assert proc.stderr.strip() == "error: config file not found: configs/nope.py"


def test_batchnorm_baseline_trains_evaluates_and_exports(tmp_path):
  """A BN model (SRResNet) through `main`: running statistics train, evaluate and export."""
  config = tiny_config(2)
  config.model = config_lib.model_config("srresnet", scale=2, n_feats=8, n_resblocks=2)
  summary = main_lib.run(config, str(tmp_path / "run"))
  assert np.isfinite(summary["model"]["psnr_mean"])
  _, variables, cfg = export.load_export(tmp_path / "run" / "export")
  assert cfg["model"] == "srresnet" and "batch_stats" in variables
  stats = variables["batch_stats"]["body"]["bn_0"]["var"]
  assert not np.allclose(np.asarray(stats), 1.0)  # updated by the two training steps
