"""Data parallelism with ``jax.sharding``: one mesh axis ``"data"``, never pmap.

The batch is split along its first axis over the mesh's ``"data"`` axis; the
train state (parameters, BatchNorm statistics, optimiser state, rng) is
replicated. A train step written for one device, ``(state, images, masks) ->
(state, metrics)``, becomes a data-parallel one by jitting it with these
shardings (:func:`make_sharded_train_step`): it is the same global-view
program, so BatchNorm statistics, the loss mean and the gradients are over the
global batch and the result equals the single-device step up to float
reduction order. XLA inserts the gradient all-reduce.

Multi-host: call :func:`initialize_distributed` first (``jax.distributed``);
then ``jax.devices()`` lists every process's devices, and :func:`shard_batch`
takes each process's own slice of the global batch.

  mesh = parallel.make_mesh()                      # all devices
  state = parallel.replicate(state, mesh)
  step = parallel.make_sharded_train_step(supervised.make_train_step(cfg, model), mesh)
  images, masks = parallel.shard_batch(mesh, images, masks)
  state, metrics = step(state, images, masks)
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """Starts ``jax.distributed`` for a multi-host run (a no-op for one process).

  With all three arguments None and one process this does nothing; on
  clusters JAX detects (TPU pods, SLURM) the arguments may be omitted.
  """
  if coordinator_address is None and (num_processes in (None, 1)):
    return
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)


def make_mesh(devices: Sequence[jax.Device] | int | None = None) -> Mesh:
  """A 1-D mesh with axis ``"data"``.

  Args:
    devices: the devices, or how many of ``jax.devices()`` to use (the first
      ``n``), or None for all of them.
  """
  all_devices = jax.devices()
  if devices is None:
    devices = all_devices
  elif isinstance(devices, int):
    if not 1 <= devices <= len(all_devices):
      raise ValueError(f"asked for {devices} devices; {len(all_devices)} are available "
                       f"({all_devices[0].platform})")
    devices = all_devices[:devices]
  return Mesh(np.asarray(list(devices)), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over ``"data"``; other axes whole."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array."""
  return NamedSharding(mesh, PartitionSpec())


def replicate(tree: Any, mesh: Mesh) -> Any:
  """``tree`` (a train state, any pytree of arrays) copied to every device of ``mesh``."""
  return jax.device_put(tree, replicated_sharding(mesh))


def shard_batch(mesh: Mesh, *arrays: np.ndarray) -> tuple[jax.Array, ...]:
  """Splits each array's leading axis over the mesh's ``"data"`` axis.

  In a single-process run each array is the global batch; in a multi-process
  run it is this process's slice (the global batch is the concatenation over
  processes in process order). The global batch size must be divisible by the
  number of devices.
  """
  sharding = batch_sharding(mesh)
  n_dev = mesh.devices.size
  out = []
  for a in arrays:
    global_batch = a.shape[0] * jax.process_count()
    if global_batch % n_dev:
      raise ValueError(f"global batch {global_batch} is not divisible by {n_dev} devices")
    if jax.process_count() == 1:
      out.append(jax.device_put(a, sharding))
    else:
      out.append(jax.make_array_from_process_local_data(
          sharding, np.asarray(a), (global_batch,) + tuple(a.shape[1:])))
  return tuple(out)


def make_sharded_train_step(step: Callable, mesh: Mesh) -> Callable:
  """Jits a single-device ``step(state, images, masks) -> (state, metrics)`` for ``mesh``.

  ``step`` may already be jitted (e.g. :func:`busjax.trainers.supervised.make_train_step`):
  the outer jit fixes the shardings (state replicated, batch split over
  ``"data"``, outputs replicated) and donates the state.
  """
  rep, batch = replicated_sharding(mesh), batch_sharding(mesh)
  return jax.jit(step, in_shardings=(rep, batch, batch), out_shardings=(rep, rep),
                 donate_argnums=0)
