"""The population axis sharded over devices and hosts, with JAX's own runtime.

One mesh axis, ``population``, spans every device (all processes' devices
when several are started); every leaf of a group's
:class:`hpjax.population.PopulationState` is split along its leading member
axis (``NamedSharding(mesh, P('population'))``), and the training, evaluation
and data stay where they are: each device trains its own members with the
same vmapped program that runs on one device.

How it is compiled. A group's ``init`` / ``train_epoch`` / ``evaluate`` /
``predict`` are wrapped in ``jax.shard_map`` (inside ``jit``): each device
runs the unchanged per-device function on its ``P / D`` members and the
replicated data, and no collective runs inside a step. We do not let XLA
partition the vmapped program by itself: its automatic partitioning of
grouped convolutions (what a vmap over conv weights becomes) replicates the
work on every device (openxla/xla issue 47945).

Members per device. A group of ``n`` members on ``D`` devices is padded to
``ceil(n / D) * D`` members: the pad members sit after the real ones and copy
the group's first member (its weights, hyperparameters and key), so they
train, cost compute and are never seen: metrics are cut to the real members
before they leave :class:`hpjax.population.Population`, so controllers (PBT,
halving) rank real members only, and checkpoints hold real members only.
Padding was chosen over refusing such sizes because structural groups
(batch sizes, architectures) have whatever size the search space draws.

Between epochs. Metrics and hyperparameters are gathered to every process
(:func:`to_host`), so every process takes the same controller decision from
the same numbers and the same seed. An exploit is a gather over the member
axis of the global array (:func:`hpjax.population.take`, compiled with the
member sharding as its output sharding): XLA moves the donors' shards across
devices and hosts, and the result keeps the population sharding.

Several processes (hosts). :func:`initialize` wraps ``jax.distributed.initialize``
(gloo collectives on CPU, NCCL on GPU) and must run before anything touches
the JAX backend; ``experiments/tune.py`` calls it from
``--coordinator_address``, ``--num_processes`` and ``--process_id`` (or the
``HPJAX_COORDINATOR_ADDRESS``, ``HPJAX_NUM_PROCESSES`` and
``HPJAX_PROCESS_ID`` environment variables). Every process runs the same
program; only process 0 (:func:`is_main_process`) writes logs and reports.

Settings. ``Population(..., mesh='auto')`` (the default) shards when more than
one device exists and changes nothing on one device; ``mesh=None`` turns
sharding off (one device, as before); a 1-D ``jax.sharding.Mesh`` with the
axis name :data:`AXIS` picks the devices. ``config.shard = False`` does the
same for ``experiments/tune.py`` runs.
"""

from __future__ import annotations

from collections.abc import Sequence
import math
from typing import Any

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
import numpy as np

# The name of the mesh axis the population is split over.
AXIS = "population"


def initialize(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  local_device_ids: Sequence[int] | None = None,
) -> bool:
  """Starts JAX's multi-controller runtime when more than one process runs.

  Must be called before anything touches the JAX backend (no array may have
  been created, no device listed). On CPU the cross-process collectives are
  gloo's (``jax_cpu_collectives_implementation``; gloo is JAX 0.10's
  default and is set here when it was unset).

  Args:
    coordinator_address: ``host:port`` of process 0, reachable from all.
    num_processes: how many processes take part; ``None`` or ``1`` with no
      coordinator: a single-process run, nothing is started.
    process_id: this process's index in ``[0, num_processes)``.
    local_device_ids: optional device ids this process uses (GPU).

  Returns:
    Whether the distributed runtime was started.

  Raises:
    ValueError: inconsistent arguments (named in the message), or the
      backend was already initialised.
  """
  if num_processes is not None and num_processes < 1:
    raise ValueError(f"num_processes: must be >= 1, got {num_processes}")
  if (num_processes or 1) == 1 and not coordinator_address:
    return False
  if not coordinator_address:
    raise ValueError(f"coordinator_address: required with num_processes={num_processes}")
  if num_processes is None or process_id is None:
    raise ValueError("num_processes and process_id: both are required with a coordinator_address")
  if not 0 <= process_id < num_processes:
    raise ValueError(f"process_id: must be in [0, {num_processes}), got {process_id}")
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top

  if xla_bridge.backends_are_initialized():
    raise ValueError(
      "hpjax.distributed.initialize: the JAX backend is already initialised; "
      "call it before any array is created or any device is listed"
    )
  if jax.config.jax_cpu_collectives_implementation is None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
    coordinator_address, num_processes, process_id, local_device_ids=local_device_ids
  )
  return True


def is_main_process() -> bool:
  """Whether this process writes logs, metrics and reports (process 0)."""
  return jax.process_index() == 0


def population_mesh(devices: Sequence[Any] | None = None) -> Mesh:
  """A 1-D mesh with axis :data:`AXIS` over ``devices`` (default: all, every process)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices, dtype=object), (AXIS,))


def resolve_mesh(mesh: Mesh | str | None) -> Mesh | None:
  """The mesh a population uses.

  Args:
    mesh: ``'auto'``: all devices when there are more than one, else None;
      ``None`` or ``False``: no sharding; a 1-D :class:`jax.sharding.Mesh`
      whose axis is :data:`AXIS`.

  Returns:
    The mesh, or None for the unsharded single-device engine.
  """
  if mesh is None or mesh is False:
    return None
  if isinstance(mesh, str):
    if mesh != "auto":
      raise ValueError(f"mesh: unknown value {mesh!r}; allowed: 'auto', None, a Mesh")
    return population_mesh() if jax.device_count() > 1 else None
  if mesh is True:
    return population_mesh() if jax.device_count() > 1 else None
  if not isinstance(mesh, Mesh) or mesh.axis_names != (AXIS,):
    raise ValueError(f"mesh: must be a 1-D jax.sharding.Mesh with axis {AXIS!r}, got {mesh!r}")
  return mesh


def member_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (member) axis split over the mesh."""
  return NamedSharding(mesh, PartitionSpec(AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """A full copy on every device of the mesh (data, indices)."""
  return NamedSharding(mesh, PartitionSpec())


def padded_size(n: int, mesh: Mesh | None) -> int:
  """Members a group of ``n`` holds on ``mesh``: ``n`` rounded up to the device count."""
  if mesh is None:
    return n
  d = mesh.size
  return int(math.ceil(n / d) * d)


def pad_index(index: Sequence[int], size: int) -> list[int]:
  """``index`` followed by copies of its first entry, ``size`` entries in all."""
  index = [int(i) for i in index]
  return index + [index[0]] * (size - len(index))


def put(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """Host values (the same on every process) -> global arrays with ``sharding``."""
  return jax.device_put(jax.tree.map(np.asarray, tree), sharding)


def to_host(tree: Any) -> Any:
  """Every leaf as a numpy array holding the whole global value, on every process.

  Arrays whose shards all live in this process are copied as usual; others
  (several processes) are all-gathered first, so every process must call
  this at the same point of the program.
  """
  leaves, treedef = jax.tree.flatten(tree)
  if all(
    not isinstance(a, jax.Array) or a.is_fully_addressable or a.is_fully_replicated for a in leaves
  ):
    return jax.tree.unflatten(treedef, [np.asarray(a) for a in jax.device_get(leaves)])
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  out = multihost_utils.process_allgather(leaves, tiled=True)
  return jax.tree.unflatten(treedef, [np.asarray(a) for a in out])


def any_process(flag: bool) -> bool:
  """Whether ``flag`` is true on any process (a collective with several processes)."""
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  return bool(np.any(multihost_utils.process_allgather(np.asarray([bool(flag)]))))


def shard_functions(
  mesh: Mesh,
  init,
  train_epoch,
  evaluate,
  predict,
  init_compiler_options: dict[str, Any] | None = None,
  compiler_options: dict[str, Any] | None = None,
):
  """A group's pure functions run per device under ``shard_map``, then jitted.

  Args:
    mesh: the population mesh.
    init: ``(keys, hparams) -> state``.
    train_epoch: ``(state, x, y) -> (state, metrics)`` (state donated).
    evaluate: ``(state, x, y, weights) -> metrics``.
    predict: ``(state, x) -> outputs``.
    init_compiler_options: XLA compiler options of ``init`` (``jax.jit``'s
      ``compiler_options``).
    compiler_options: those of the other three.

  Returns:
    The four jitted functions; member-axis arguments and results are split
    over :data:`AXIS`, data arguments replicated.
  """
  m, r = PartitionSpec(AXIS), PartitionSpec()

  def wrap(fn, in_specs, out_specs, **jit_kwargs):
    # check_vma=False: the functions are per member, with no collective, and
    # their scans start from unvarying zeros that would fail the VMA check.
    return jax.jit(
      jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False),
      **jit_kwargs,
    )

  return (
    wrap(init, (m, m), m, compiler_options=init_compiler_options),
    wrap(train_epoch, (m, r, r), (m, m), donate_argnums=0, compiler_options=compiler_options),
    wrap(evaluate, (m, r, r, r), m, compiler_options=compiler_options),
    wrap(predict, (m, r), m, compiler_options=compiler_options),
  )


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier ``name`` (no-op for one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    multihost_utils.sync_global_devices(name)
