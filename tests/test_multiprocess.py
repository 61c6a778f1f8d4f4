"""Two processes (2 CPU devices each) train exactly like one process with 4 devices.

Each process loads only its half of every global batch; `jax.distributed` joins them over
loopback with gloo collectives; checkpoints, logs and the export are shared by both.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _command(workdir, *extra):
  return [sys.executable, "-m", "medsr_jax.main", "--config=tests/tiny_config.py:steps=4,mesh=4x1",
          f"--workdir={workdir}", *extra]


def _env(devices):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  return env


def _losses(workdir):
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_two_processes_match_one_process(tmp_path):
  port = _free_port()
  multi = tmp_path / "multi"
  procs = [subprocess.Popen(
      _command(multi, "--config.distributed=True", f"--config.coordinator_address=127.0.0.1:{port}",
               "--config.num_processes=2", f"--config.process_id={pid}"),
      cwd=ROOT, env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for pid in (0, 1)]
  outputs = [p.communicate(timeout=900)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  assert "2 process(es)" in outputs[0]
  single = tmp_path / "single"
  proc = subprocess.run(_command(single), cwd=ROOT, env=_env(4), capture_output=True, text=True,
                        timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  got, want = _losses(multi), _losses(single)
  assert sorted(got) == sorted(want) == [1, 2, 3, 4]
  for step in want:
    np.testing.assert_allclose(got[step], want[step], rtol=0, atol=1e-5)
  assert (multi / "export" / "params.npz").exists()
  assert sorted(p.name for p in (multi / "checkpoints").iterdir() if p.name.isdigit()) == ["3", "4"]
