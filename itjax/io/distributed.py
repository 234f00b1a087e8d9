"""Several processes, one job: JAX's multi-controller runtime (jax.distributed) joined before any device is used.

Each process runs the same program over its own devices; the mesh spans all of them. `initialize` joins when the
command line names a coordinator (`--coordinator_address HOST:PORT --num_processes N --process_id I`), when the
environment does (JAX_COORDINATOR_ADDRESS, a SLURM job of several tasks, a multi-host TPU slice), and otherwise does
nothing: one process is the default. Files that describe the run are written by process 0 only (`primary`);
checkpoints are written by all, as orbax requires.
"""

from __future__ import annotations

import os

import jax

from itjax.errors import UserError
from itjax.io import log


def _environment_asks() -> bool:
  """Whether the environment describes a job of several processes that jax.distributed detects by itself."""
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    return True
  if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
    return True
  return "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")  # a TPU slice of several hosts


def initialize(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1) -> None:
  """Joins the job's other processes (see the module's docstring); must run before JAX touches a device."""
  given = [bool(coordinator_address), num_processes > 0, process_id >= 0]
  if any(given) and not all(given):
    raise UserError("--coordinator_address, --num_processes and --process_id go together (got "
                    f"{coordinator_address or 'none'}, {num_processes or 'none'}, "
                    f"{process_id if process_id >= 0 else 'none'})")
  if all(given):
    if not 0 <= process_id < num_processes:
      raise UserError(f"--process_id {process_id} must be in 0..{num_processes - 1} (--num_processes {num_processes})")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices talk across processes
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  elif _environment_asks():
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize()
  else:
    return
  log.set_process(jax.process_index())


def primary() -> bool:
  """Whether this process writes the run's own files (metrics, TensorBoard, plots, config.json, generated data)."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process got here (after process 0 wrote files the others read); free with one process."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)
