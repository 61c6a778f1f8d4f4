"""Transparent huge pages for XLA:CPU's per-step temporaries, through glibc's malloc tunable.

XLA:CPU takes each step's temporaries from malloc in one block (RDST-E's training step at the
thesis' batch: ~2.9 GB), from one of its worker threads. glibc serves a block that large with a
fresh `mmap` and returns it with `munmap` when the step ends, so every step faults the whole block
in again, 4 KiB at a time: 1.2M minor faults and ~4.8 s of kernel time in a ~10.8 s RDST-E step
on the 2-core development host (docs/BENCHMARKS.md, "page faults"). With the tunable
`glibc.malloc.hugetlb=1` glibc marks such blocks `MADV_HUGEPAGE`, the kernel backs them with
2 MiB pages, and the faults drop ~250x. `mallopt` cannot do this for a running process (the
block is too large for a thread arena, so `M_MMAP_MAX=0` does not keep it off `mmap`), and
glibc reads `GLIBC_TUNABLES` only when a process starts. So:

  * `python -m medsr_jax.main` and `python -m experiments.bench_train` call
    `reexec_with_hugepages()` first thing: the process replaces itself once (`os.execve`, same
    PID, same arguments) with the tunable added to its environment;
  * `environment_with_hugepages(env)` is the environment to give a child process
    (`experiments.bench_vs_torch` runs each of its measurements that way);
  * a library user (notebook, own script) starts Python with
    `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` to get the same.

Nothing changes where it cannot help: not Linux with glibc >= 2.35, transparent huge pages
`never` (or `always`: the kernel then already uses them), the tunable already set, or
`MEDSR_JAX_HUGEPAGES=0` in the environment (the opt-out). Numerics are unaffected; resident
memory can round up to 2 MiB per block.
"""

from __future__ import annotations

import os
import platform
import sys

TUNABLE = "glibc.malloc.hugetlb"
TUNABLE_SETTING = f"{TUNABLE}=1"
TUNABLES_VARIABLE = "GLIBC_TUNABLES"
OPT_OUT_VARIABLE = "MEDSR_JAX_HUGEPAGES"
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"
MIN_GLIBC = (2, 35)   # the first glibc with glibc.malloc.hugetlb


def _glibc_version() -> tuple[int, ...] | None:
  library, version = platform.libc_ver()
  if library != "glibc" or not version:
    return None
  try:
    return tuple(int(part) for part in version.split(".")[:2])
  except ValueError:
    return None


def transparent_hugepage_mode() -> str | None:
  """The kernel's THP mode ('always', 'madvise' or 'never'), or None where it cannot be read."""
  try:
    with open(THP_MODE_FILE, encoding="ascii") as f:
      text = f.read()
  except OSError:
    return None
  start, end = text.find("["), text.find("]")
  return text[start + 1:end] if 0 <= start < end else None


def helps(environ: dict | None = None) -> bool:
  """Whether adding the tunable to `environ` (default: this process's) would change anything."""
  environ = os.environ if environ is None else environ
  if environ.get(OPT_OUT_VARIABLE, "1").strip().lower() in ("0", "false", "no", "off"):
    return False
  if TUNABLE in environ.get(TUNABLES_VARIABLE, ""):
    return False   # set already, to whatever the user chose
  if sys.platform != "linux":
    return False
  version = _glibc_version()
  if version is None or version < MIN_GLIBC:
    return False
  return transparent_hugepage_mode() == "madvise"


def environment_with_hugepages(environ: dict | None = None) -> dict:
  """A copy of `environ` (default: this process's) with the tunable added where it helps."""
  env = dict(os.environ if environ is None else environ)
  if helps(env):
    current = env.get(TUNABLES_VARIABLE, "")
    env[TUNABLES_VARIABLE] = f"{current}:{TUNABLE_SETTING}" if current else TUNABLE_SETTING
  return env


def reexec_with_hugepages() -> None:
  """Replaces this process by the same command with the tunable set, where it helps; returns
  otherwise (also in the re-executed process, whose environment has it). Call it first thing in
  a command-line entry point, before threads start or files open."""
  argv = getattr(sys, "orig_argv", None)
  if not argv or not sys.executable or not helps():
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *argv[1:]], environment_with_hugepages())
