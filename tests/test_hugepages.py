"""medsr_jax/hugepages.py: when glibc's huge-page tunable is added, and that the re-executed
process really gets transparent huge pages for a large malloc block (XLA:CPU's temporaries)."""

import os
import subprocess
import sys

import pytest

from medsr_jax import hugepages

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def thp_host(monkeypatch, tmp_path):
  """A Linux host with glibc 2.36 and THP in `madvise` mode; returns a setter of the THP mode."""
  mode_file = tmp_path / "enabled"

  def set_mode(text):
    mode_file.write_text(text)

  set_mode("always [madvise] never\n")
  monkeypatch.setattr(hugepages, "THP_MODE_FILE", str(mode_file))
  monkeypatch.setattr(hugepages, "_glibc_version", lambda: (2, 36))
  monkeypatch.setattr(sys, "platform", "linux")
  return set_mode


def test_tunable_is_added_or_appended_where_it_helps(thp_host):
  del thp_host
  assert hugepages.environment_with_hugepages({"A": "1"}) == {
      "A": "1", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
  env = hugepages.environment_with_hugepages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
  source = {"B": "2"}
  hugepages.environment_with_hugepages(source)
  assert source == {"B": "2"}   # a copy, never the caller's dict


@pytest.mark.parametrize("env", [
    {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"},          # the user's own choice stays
    {"MEDSR_JAX_HUGEPAGES": "0"}, {"MEDSR_JAX_HUGEPAGES": "off"},   # the opt-out
])
def test_environment_is_left_alone_when_set_or_opted_out(thp_host, env):
  del thp_host
  assert not hugepages.helps(env)
  assert hugepages.environment_with_hugepages(env) == env


@pytest.mark.parametrize("mode", ["[always] madvise never\n", "always madvise [never]\n", ""])
def test_nothing_to_add_unless_the_kernel_wants_madvise(thp_host, mode):
  thp_host(mode)
  assert not hugepages.helps({})
  assert hugepages.environment_with_hugepages({}) == {}


def test_nothing_to_add_on_old_or_other_libc(thp_host, monkeypatch):
  del thp_host
  monkeypatch.setattr(hugepages, "_glibc_version", lambda: (2, 31))
  assert not hugepages.helps({})
  monkeypatch.setattr(hugepages, "_glibc_version", lambda: None)   # musl, macOS
  assert not hugepages.helps({})


_PROBE = """
import ctypes, os, sys
sys.path.insert(0, {repo!r})
print("pid", os.getpid(), flush=True)
from medsr_jax import hugepages
hugepages.reexec_with_hugepages()

def huge_kib():
  with open("/proc/self/smaps_rollup") as f:
    return next(int(l.split()[1]) for l in f if l.startswith("AnonHugePages:"))

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
before, size = huge_kib(), 128 << 20
block = libc.malloc(ctypes.c_size_t(size))
ctypes.memset(block, 1, size)
print("pid", os.getpid(), os.environ.get("GLIBC_TUNABLES"), (huge_kib() - before) >> 10)
"""


def test_reexec_gives_a_large_malloc_block_huge_pages():
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "MEDSR_JAX_HUGEPAGES")}
  if not hugepages.helps(env):
    pytest.skip("this host has no glibc >= 2.35 with THP in madvise mode")
  out = subprocess.run([sys.executable, "-c", _PROBE.format(repo=REPO)], env=env, check=True,
                       capture_output=True, text=True, timeout=60).stdout.split("\n")
  first, second = out[0].split(), out[-2].split()
  # The re-executed process: the same PID, printed the start line once more, then the block.
  assert out.count(" ".join(first)) == 2 and second[1] == first[1]
  assert second[2] == "glibc.malloc.hugetlb=1"
  assert int(second[3]) >= 64, out   # MiB of the 128 MiB block on 2 MiB pages (0 without)
