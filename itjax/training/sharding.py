"""The device mesh ('data', 'fsdp', 'tensor') and the one table mapping logical axis names to mesh axes.

Every param carries logical axis names (see itjax/model/llama.py); a name missing from RULES is an error, so a new
param cannot silently end up replicated. Batches are split over ('data', 'fsdp') on their batch axis. The same table
constrains activations (the model's nn.with_logical_constraint calls) inside the functions `with_rules` wraps; a mesh
axis already taken by an earlier dimension is skipped, so ('batch', 'length', 'embed') becomes
(('data', 'fsdp'), None, None).
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from itjax.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")
RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("mlp", "tensor"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("heads", "tensor"),
    ("layers", None),
    ("norm", None),
    ("lora_rank", None),
    ("length", None),
    ("head_dim", None),
)


def with_rules(fn, mesh: Mesh):
  """fn traced with RULES and the mesh active, so the model's activation constraints take effect (without them
  nn.with_logical_constraint is a no-op and XLA alone decides how activations are laid out)."""
  @functools.wraps(fn)
  def constrained(*args, **kwargs):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(RULES):
      return fn(*args, **kwargs)
  return constrained


def mesh_shape(shape: tuple[int, int, int], num_devices: int) -> tuple[int, int, int]:
  """Resolves one -1 to the remaining devices; the product must equal the device count."""
  shape = tuple(int(x) for x in shape)
  if len(shape) != 3 or shape.count(-1) > 1 or any(x == 0 or x < -1 for x in shape):
    raise UserError(f"mesh must be 3 sizes for {MESH_AXES} (one may be -1), got {shape}")
  known = math.prod(x for x in shape if x != -1)
  if -1 in shape:
    if num_devices % known:
      raise UserError(f"mesh {shape} does not divide the {num_devices} devices")
    shape = tuple(num_devices // known if x == -1 else x for x in shape)
  if math.prod(shape) != num_devices:
    raise UserError(f"mesh {shape} needs {math.prod(shape)} devices, but there are {num_devices}")
  return shape


def make_mesh(shape: tuple[int, int, int], devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(shape, len(devices))
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def spec(axes: tuple[str, ...], mesh_sizes: dict[str, int] | None = None, shape=None, where: str = "") -> P:
  """Logical axes -> PartitionSpec by RULES (a mesh axis is used at most once); checks divisibility if given."""
  rules = dict(RULES)
  out, used = [], set()
  for i, name in enumerate(axes):
    if name not in rules:
      raise ValueError(f"{where or 'param'}: logical axis {name!r} has no rule in itjax.training.sharding.RULES")
    target = rules[name]
    names = () if target is None else (target,) if isinstance(target, str) else target
    names = tuple(n for n in names if n not in used)
    used.update(names)
    if shape is not None and mesh_sizes is not None:
      size = math.prod(mesh_sizes[n] for n in names)
      if shape[i] % size:
        raise UserError(f"{where}: dimension {i} ({name}, {shape[i]}) is not divisible by mesh axes {names} "
                        f"of size {size}")
    out.append(names[0] if len(names) == 1 else names or None)
  return P(*out)


def tree_shardings(mesh: Mesh, axes_tree: dict, shapes_tree: dict) -> dict:
  """NamedShardings for a tree of params (or optimizer state shaped like them) from their logical axes."""
  from itjax.model.lora import flatten, unflatten
  sizes = dict(zip(mesh.axis_names, mesh.devices.shape))
  axes = flatten(axes_tree)
  return unflatten({k: NamedSharding(mesh, spec(tuple(axes[k]), sizes, v.shape, k))
                    for k, v in flatten(shapes_tree).items()})


def batch_sharding(mesh: Mesh, leading: int = 0) -> NamedSharding:
  """[*leading, batch, length] arrays: batch over ('data', 'fsdp')."""
  return NamedSharding(mesh, P(*([None] * leading), ("data", "fsdp"), None))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
