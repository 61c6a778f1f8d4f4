"""Side-by-side CPU benchmark: the author's PyTorch models against medsr_jax, same machine, one run.

  python -m experiments.bench_vs_torch                    # edsr_lite, rdst_e, swinir_light
  python -m experiments.bench_vs_torch --models=edsr_lite --steps=1 --infer_iters=2 --rounds=1
  python -m experiments.bench_vs_torch --models=rdst,miassr --markdown=/tmp/vs_torch.md

The PyTorch side is the torchref harness (`shared/torchref`: `setup.sh` builds the author's
models from their published code in a venv at /tmp/torchref-venv; see its README). Without it
this script stops with one line on stderr and exit code 2.

Two kinds of measurement per model, with the harness's shapes:
  train  one training step (forward + L1 + backward + Adam), batch 32 of LR 24x24 -> HR 96x96
         at x4 (MIASSR: batch 16); ours is the real step (`experiments.bench_train`: the jitted,
         donated `make_train_step(pixel_objective(model, 'l1'))` over `trainers.state` players);
  infer  one forward pass of a 40x32 LR slice, batch 1, x4 (160x128 out).
For each (model, kind) the frameworks alternate, ours then PyTorch, `--rounds` times, and every
measurement is a fresh subprocess, so neither framework's thread pool disturbs the other. Both
are pinned to the same `--threads` CPUs (PyTorch also runs `torch.set_num_threads(threads)`; XLA
sizes its pool from the affinity mask). A measurement is the median of `--steps` steps or
`--infer_iters` calls after warm-up (ours: compilation + 1 call; PyTorch: 2 calls); a framework's
time is the median of its rounds. The table gives ratio = PyTorch s / medsr_jax s (> 1: medsr_jax
is faster), and per kind the geometric mean and the lowest ratio. Our models run with their
default options (scan_blocks on) and, like `python -m medsr_jax.main`, with glibc's huge-page
malloc tunable where it helps (medsr_jax/hugepages.py); PyTorch runs in the environment it is
given (`--torch_hugepages` gives it the same tunable).

Benchmark on an otherwise idle machine: PyTorch's threads slow down sharply when another process
uses one of their cores. Timing is measured here, never asserted in tests.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from medsr_jax import errors, hugepages
from medsr_jax.errors import InputError
from medsr_jax.io import text_files

REPO = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_HARNESS = REPO.parent / "shared" / "torchref"
DEFAULT_TORCH_PYTHON = "/tmp/torchref-venv/bin/python"
SETUP_HINT = "set it up with: MIRROR=<folder of the fetched GinZhu+RDST, GinZhu+MIASSR> bash " \
             "<harness>/setup.sh (see its README)"

# Models the harness builds with a training case at x4, and the batch it uses there.
TRAIN_BATCH = {"rdst": 32, "rdst_e": 32, "swinir_light": 32, "edsr_lite": 32, "miassr": 16}
# Models with an inference case (batch 1, 40x32 at x4) in the harness.
INFER_MODELS = ("rdst", "rdst_e", "swinir_light", "swinir", "edsr_lite", "edsr", "rdn", "rcan",
                "han", "miassr")
KINDS = ("train", "infer")
SCALE = 4
LR_PATCH = 24
INFER_HW = (40, 32)
RESULT = "RESULT "

_MODELS = flags.DEFINE_list("models", ["edsr_lite", "rdst_e", "swinir_light"],
                            f"Models (train: {', '.join(TRAIN_BATCH)}; infer also: "
                            f"{', '.join(m for m in INFER_MODELS if m not in TRAIN_BATCH)}).")
_KINDS = flags.DEFINE_list("kinds", list(KINDS), "Measurements: train, infer or both.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed train steps per measurement (after warm-up).")
_INFER = flags.DEFINE_integer("infer_iters", 20, "Timed inference calls per measurement.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Alternations (ours, PyTorch) per model and kind.")
_THREADS = flags.DEFINE_integer("threads", 2, "CPUs both frameworks are pinned to (the "
                                "harness's torch.set_num_threads).")
_TORCH_PY = flags.DEFINE_string("torch_python", DEFAULT_TORCH_PYTHON,
                                "Python of the torchref venv.")
_HARNESS = flags.DEFINE_string("harness", str(DEFAULT_HARNESS),
                               "Folder of the torchref harness (bench_torch.py, ref_models.py).")
_TORCH_HUGEPAGES = flags.DEFINE_bool(
    "torch_hugepages", False, "Run PyTorch with glibc's huge-page tunable too (ours always runs "
    "with it where it helps, as `medsr_jax.main` does): checks that our gain from it is not one "
    "PyTorch would get as well.")
_TIMEOUT = flags.DEFINE_integer("timeout_s", 3600, "Limit of one measurement subprocess.")
_MARKDOWN = flags.DEFINE_string("markdown", None, "Also write the report here.")
_CHILD = flags.DEFINE_enum("child", None, list(KINDS),
                           "Internal: run one medsr_jax measurement of --models[0] and print it.")


# ------------------------------------------------------------------------------ ours (child)
def _child(kind: str, name: str) -> dict:
  """One medsr_jax measurement, in this (fresh) process."""
  import jax  # pylint: disable=import-outside-toplevel
  from experiments import bench_train  # pylint: disable=import-outside-toplevel
  if kind == "train":
    r = bench_train.time_train_step(name, batch=TRAIN_BATCH[name], lr_patch=LR_PATCH,
                                    scale=SCALE, steps=_STEPS.value, warmup=1)
  else:
    r = bench_train.time_inference(name, height=INFER_HW[0], width=INFER_HW[1], scale=SCALE,
                                   iters=_INFER.value, warmup=1)
  return dict(name=name, kind=kind, median_s=statistics.median(r["times"]),
              times_s=[round(t, 4) for t in r["times"]], compile_s=round(r["compile_s"], 2),
              jax=jax.__version__, backend=jax.default_backend())


# ------------------------------------------------------------------------------ parent
def _cpus(threads: int) -> set[int]:
  allowed = sorted(os.sched_getaffinity(0))
  if threads < 1:
    raise InputError(f"--threads must be >= 1, got {threads}")
  return set(allowed[:threads])


def _run(cmd: list[str], cpus: set[int], timeout: int, env: dict | None = None
         ) -> tuple[str | None, str]:
  """(stdout, '') of `cmd` pinned to `cpus`, or (None, a one-line reason)."""
  try:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO,
                       preexec_fn=lambda: os.sched_setaffinity(0, cpus), check=False)
  except subprocess.TimeoutExpired:
    return None, f"timeout after {timeout}s"
  if p.returncode != 0:
    tail = (p.stderr or p.stdout).strip().splitlines()
    return None, f"exit {p.returncode}: {tail[-1] if tail else ''}"
  return p.stdout, ""


def measure_ours(kind: str, name: str, cpus: set[int]) -> dict:
  cmd = [sys.executable, "-m", "experiments.bench_vs_torch", f"--child={kind}",
         f"--models={name}", f"--steps={_STEPS.value}", f"--infer_iters={_INFER.value}"]
  # As `python -m medsr_jax.main` runs: with glibc's huge-page tunable (medsr_jax/hugepages.py).
  env = hugepages.environment_with_hugepages(dict(os.environ, JAX_PLATFORMS="cpu"))
  out, err = _run(cmd, cpus, _TIMEOUT.value, env)
  lines = [l for l in (out or "").splitlines() if l.startswith(RESULT)]
  if not lines:
    return {"error": err or "no result line"}
  return json.loads(lines[-1][len(RESULT):])


def torch_environment() -> dict:
  """PyTorch's environment: ours as it is, or with the huge-page tunable (`--torch_hugepages`)."""
  return hugepages.environment_with_hugepages() if _TORCH_HUGEPAGES.value else dict(os.environ)


def measure_torch(kind: str, name: str, cpus: set[int]) -> dict:
  harness = pathlib.Path(_HARNESS.value)
  with tempfile.TemporaryDirectory(prefix="bench_vs_torch_") as tmp:
    out_json = os.path.join(tmp, "torch.json")
    skip = "--skip-infer" if kind == "train" else "--skip-train"
    cmd = [_TORCH_PY.value, str(harness / "bench_torch.py"), "--only", name, skip,
           "--threads", str(_THREADS.value), "--steps", str(_STEPS.value),
           "--runs", str(_INFER.value), "--out-json", out_json,
           "--out-md", os.path.join(tmp, "torch.md")]
    _, err = _run(cmd, cpus, _TIMEOUT.value, torch_environment())
    if err:
      return {"error": err}
    with open(out_json, encoding="utf-8") as f:
      report = json.load(f)
  mode = "train" if kind == "train" else "infer"
  # The harness also times MIASSR's training at x2.5: keep the x4 case.
  cases = [r for r in report["results"]
           if r.get("name") == name and r.get("mode") == mode
           and float(r.get("scale", SCALE)) == SCALE]
  if not cases:
    return {"error": f"no {mode} result for {name} in the harness output"}
  r = dict(cases[0], torch=report["env"].get("torch"))
  if "error" in r:
    return {"error": " ".join(str(r["error"]).split())[-300:]}
  if r.get("flag"):
    print(f"  note: {r['flag']}", file=sys.stderr)
  return r


def check_harness() -> str:
  """The torch version of the harness venv, or InputError with one line saying what is missing."""
  harness = pathlib.Path(_HARNESS.value)
  for f in ("bench_torch.py", "ref_models.py"):
    if not (harness / f).is_file():
      raise InputError(f"PyTorch harness not found: no {harness / f}; pass --harness=<folder of "
                       f"the torchref harness>")
  py = _TORCH_PY.value
  if not (os.path.isfile(py) and os.access(py, os.X_OK)):
    raise InputError(f"PyTorch harness not set up: no {py}; "
                     f"{SETUP_HINT.replace('<harness>', str(harness))}")
  src = os.environ.get("TORCHREF_SRC", "/tmp/torchref-src")
  for repo in ("RDST", "MIASSR"):
    if not os.path.isfile(os.path.join(src, repo, ".torchref_extracted")):
      raise InputError(f"PyTorch harness not set up: the author's code is not in {src}/{repo}; "
                       f"{SETUP_HINT.replace('<harness>', str(harness))}")
  try:
    p = subprocess.run([py, "-c", "import torch; print(torch.__version__)"], capture_output=True,
                       text=True, timeout=300, check=False)
  except (OSError, subprocess.TimeoutExpired) as e:
    raise InputError(f"PyTorch harness python {py} does not run: {e}") from e
  if p.returncode != 0:
    raise InputError(f"PyTorch harness python {py} cannot import torch; "
                     f"{SETUP_HINT.replace('<harness>', str(harness))}")
  return p.stdout.strip()


def _cases(names: list[str], kinds: list[str]) -> list[tuple[str, str]]:
  bad = sorted(set(kinds) - set(KINDS))
  if bad:
    raise InputError(f"unknown --kinds {bad}; known: {list(KINDS)}")
  known = set(TRAIN_BATCH) | set(INFER_MODELS)
  unknown = [n for n in names if n not in known]
  if unknown:
    raise InputError(f"no PyTorch reference case for {unknown}; known: {sorted(known)}")
  cases = [(n, k) for n in names for k in KINDS if k in kinds
           and (n in TRAIN_BATCH if k == "train" else n in INFER_MODELS)]
  if not cases:
    raise InputError(f"nothing to measure for --models={','.join(names)} "
                     f"--kinds={','.join(kinds)}")
  return cases


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown CPU"


def _tunables(env) -> str:
  return env.get(hugepages.TUNABLES_VARIABLE, "") or "unset"


def _fmt(v: float | None) -> str:
  return "FAILED" if v is None else f"{v:.3f}"


def report(rows: list[dict], header: str) -> str:
  """The markdown report: header, one row per (model, kind), per-kind summary."""
  lines = [header, "", "| model | kind | PyTorch s | medsr_jax s | ratio (PyTorch / medsr_jax) |",
           "|---|---|---:|---:|---:|"]
  for r in rows:
    ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
    lines.append(f"| {r['model']} | {r['kind']} | {_fmt(r['torch_s'])} | {_fmt(r['ours_s'])} "
                 f"| {ratio} |")
  lines.append("")
  for kind in KINDS:
    ratios = [r["ratio"] for r in rows if r["kind"] == kind and r["ratio"] is not None]
    if ratios:
      geo = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
      low = min(ratios)
      worst = next(r["model"] for r in rows if r["kind"] == kind and r["ratio"] == low)
      lines.append(f"- {kind}: geometric mean ratio {geo:.2f} over {len(ratios)} model(s); "
                   f"lowest {low:.2f} ({worst})")
  errs = [f"- {r['model']} {r['kind']}: {e}" for r in rows for e in r["errors"]]
  if errs:
    lines += ["", "Failed measurements:"] + errs
  return "\n".join(lines) + "\n"


def run() -> str:
  cases = _cases(_MODELS.value, _KINDS.value)
  for name, value in (("steps", _STEPS.value), ("infer_iters", _INFER.value),
                      ("rounds", _ROUNDS.value)):
    if value < 1:
      raise InputError(f"--{name} must be >= 1, got {value}")
  torch_version = check_harness()
  cpus = _cpus(_THREADS.value)
  jax_version = importlib.metadata.version("jax")
  header = (f"# medsr_jax vs the author's PyTorch, CPU `{cpu_model()}` ({os.cpu_count()} cores, "
            f"both pinned to {len(cpus)}: cpus {sorted(cpus)}), jax {jax_version}, "
            f"torch {torch_version}, python {platform.python_version()}; median of "
            f"{_ROUNDS.value} round(s) of {_STEPS.value} train steps (batch 32, MIASSR 16, "
            f"{LR_PATCH} -> {LR_PATCH * SCALE}) / {_INFER.value} inference calls "
            f"(batch 1, {INFER_HW[0]}x{INFER_HW[1]} -> x{SCALE}); {time.strftime('%Y-%m-%d')}; "
            f"load average at start {os.getloadavg()[0]:.2f}; GLIBC_TUNABLES: medsr_jax "
            f"`{_tunables(hugepages.environment_with_hugepages())}`, PyTorch "
            f"`{_tunables(torch_environment())}`")
  if os.getloadavg()[0] >= 0.5:
    print(f"warning: load average {os.getloadavg()[0]:.2f} before the benchmark: other processes "
          "are using the CPUs and slow PyTorch's threads down sharply", file=sys.stderr)
  rows = []
  t_start = time.time()
  for name, kind in cases:
    ours, theirs, errs = [], [], []
    for i in range(_ROUNDS.value):
      for label, measure, into in (("medsr_jax", measure_ours, ours),
                                   ("PyTorch", measure_torch, theirs)):
        t0 = time.time()
        r = measure(kind, name, cpus)
        if "error" in r:
          errs.append(f"{label} round {i + 1}: {r['error']}")
          msg = f"FAILED ({r['error']})"
        else:
          into.append(r["median_s"])
          msg = f"{r['median_s']:.4f} s"
        print(f"[{time.time() - t_start:6.0f}s] {name} {kind} round {i + 1} {label}: {msg} "
              f"(wall {time.time() - t0:.0f}s)", file=sys.stderr, flush=True)
    ours_s = statistics.median(ours) if ours else None
    torch_s = statistics.median(theirs) if theirs else None
    ratio = torch_s / ours_s if ours_s and torch_s else None
    rows.append(dict(model=name, kind=kind, ours_s=ours_s, torch_s=torch_s, ratio=ratio,
                     errors=errs))
  header += f", at end {os.getloadavg()[0]:.2f}"
  return report(rows, header)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _CHILD.value:
    print(RESULT + json.dumps(_child(_CHILD.value, _MODELS.value[0])), flush=True)
    return

  def go():
    text = run()
    print(text, end="", flush=True)
    if _MARKDOWN.value:
      path = pathlib.Path(_MARKDOWN.value)
      if not path.parent.is_dir():
        raise InputError(f"{path}: directory does not exist")
      text_files.write_text_atomic(path, text, what="--markdown")
      print(f"wrote {path}", file=sys.stderr)

  errors.cli_main(go)


if __name__ == "__main__":
  app.run(main)
