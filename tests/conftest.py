"""Test set-up: 8 emulated CPU devices (sharding tests), float32 matmuls at full precision.

XLA reads the device count when the backend starts, so this must run before any test imports jax.
Tests that need one device build their mesh over `jax.devices()[:1]`.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib  # noqa: E402

import jax  # noqa: E402

# Tests build the same small programs many times (three `main` runs in the resume test, one mesh
# after another in the sharding test): a persistent compilation cache lets later builds reuse them.
_CACHE = pathlib.Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax_compilation_cache"
jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
