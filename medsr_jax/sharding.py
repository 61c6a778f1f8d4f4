"""Device mesh and shardings for the train step.

The mesh has axes ('data', 'fsdp') of type Auto (Linen convolutions do not carry the sharding
annotations the newer Explicit axes require). The batch is split over both axes; each parameter is
either replicated or, when it is large enough and one of its dimensions divides evenly, split over
'fsdp' along its largest such dimension (ZeRO-3 style, as big_vision/MaxText do). With the default
shape (-1, 1) that is plain data parallelism.

Every process feeds only its own rows of a global batch; `global_batch` assembles them into one
`jax.Array` with `jax.make_array_from_process_local_data`, so the same code runs on one CPU, eight
emulated CPU devices (`XLA_FLAGS=--xla_force_host_platform_device_count=8`) or a multi-host pod.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from absl import logging
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

BATCH_AXES = ("data", "fsdp")


def make_mesh(shape: Sequence[int], axis_names: Sequence[str] = BATCH_AXES,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh over `devices` (default: all); one entry of `shape` may be -1 (the rest)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = list(shape)
  if shape.count(-1) > 1:
    raise ValueError(f"at most one -1 in mesh shape {shape}")
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    if len(devices) % known:
      raise ValueError(f"{len(devices)} devices do not fill mesh shape {shape}")
    shape[shape.index(-1)] = len(devices) // known
  needed = int(np.prod(shape))
  if needed > len(devices):
    raise ValueError(f"mesh shape {tuple(shape)} needs {needed} devices, have {len(devices)}")
  if needed < len(devices):
    logging.warning("mesh %s uses %d of %d devices", tuple(shape), needed, len(devices))
    devices = devices[:needed]
  return jax.make_mesh(tuple(shape), tuple(axis_names), devices=devices,
                       axis_types=(AxisType.Auto,) * len(shape))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over every mesh axis."""
  return NamedSharding(mesh, P(tuple(mesh.axis_names)))


def param_sharding(x: Any, mesh: Mesh, min_size: int) -> NamedSharding:
  """FSDP rule for one array: split the largest evenly divisible dim over 'fsdp', else replicate."""
  fsdp = mesh.shape.get("fsdp", 1)
  shape = getattr(x, "shape", ())
  if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return replicated(mesh)
  for dim in np.argsort(shape)[::-1]:
    if shape[dim] % fsdp == 0:
      spec = [None] * len(shape)
      spec[dim] = "fsdp"
      return NamedSharding(mesh, P(*spec))
  return replicated(mesh)


def tree_shardings(tree: Any, mesh: Mesh, min_size: int = 2 ** 16) -> Any:
  """Shardings for a state pytree: FSDP rule for arrays, replicated scalars."""
  return jax.tree.map(lambda x: param_sharding(x, mesh, min_size), tree)


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's rows of a batch -> global arrays split over the batch axes."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local.items()}


def host_local(tree: Any, mesh: Mesh) -> Any:
  """A full copy of every array on this process (all-gathered if sharded), for host-side work.

  Evaluation, export and logging need whole arrays; with several processes a global array is
  not fully addressable: replicated arrays give their local copy, sharded ones are gathered to a
  replicated layout first (a collective, so every process must call this together).
  """
  if jax.process_count() == 1:
    return tree
  sharded = [x for x in jax.tree.leaves(tree) if not x.is_fully_replicated]
  if sharded:
    tree = jax.jit(lambda t: t, out_shardings=replicated(mesh))(tree)
  return jax.tree.map(lambda x: x.addressable_data(0), tree)
