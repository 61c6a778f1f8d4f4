"""Test set-up: 8 emulated CPU devices (sharding tests), float32 matmuls at full precision.

XLA reads the device count when the backend starts, so this must run before any test imports jax.
Tests that need one device build their mesh over `jax.devices()[:1]`.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
