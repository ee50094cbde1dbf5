"""Fully sharded data parallelism (FSDP2, ``fully_shard``) for the food LMM under Lightning's ``ModelParallelStrategy``.

:meth:`FoodLMMModule.configure_model` calls :func:`shard_model` once the network is built, whenever the trainer
gives the module a device mesh (only ``ModelParallelStrategy`` does). What is sharded and what is not:

* **Frozen weights are sharded** across the data-parallel ranks (ZeRO-3): the units the model names in
  ``frozen_units()`` (the vision encoder or each of its blocks, every decoder block as the model's own block class,
  the token embedding and the LM head) are one FSDP unit each, so a rank holds ``1 / world`` of them and
  all-gathers one block at a time, in forward and again in backward. This is where the memory is (13 GB of a 7B).
* **Trainable tensors are replicated**: every module whose parameters are all trainable (each layer's experts and
  router together, peft's LoRA matrices, the projector when trained) is its own FSDP unit on the 2-D mesh
  ``(data_parallel, tensor_parallel=1)``. FSDP2 reads a 2-D mesh as HSDP: replicate over the first dimension,
  shard over the second, which is one wide, so every rank holds the whole tensor and gradients are all-reduced
  as DDP does. The trainable state is small (0.25 GB with optimizer state for the paper's adapters at 7B), and
  whole tensors on every rank mean the adapter-only save at the end of ``fit`` reads them on rank 0 alone, with no
  collective that the other ranks would have to join.
* The root unit (the ``FoodLMM``) keeps what is left: the final norm and the MoCLE cluster embedding, replicated
  when anything trainable is left there, sharded otherwise. The model's ``forward_methods`` (its generation) are
  registered as forward methods, so the root's parameters are gathered for validation's generation as they are for
  ``forward``.
* A mixture layer's experts and router are **one unit** (``fully_shard([experts, router])``), and
  ``LoRAExperts.forward_routed`` is registered as its forward: the layer stacks the router's weight under the
  experts' ``A`` for one matmul, which needs both gathered at once, and computes exactly what one process computes.

Trainable and frozen tensors thus never share a unit. FSDP2 would accept them together (a unit's trainable tensors
only need one dtype), but a decoder block unit holding adapters would shard them too.

Activation checkpointing (``model.gradient_checkpointing``) stays per decoder block, the unit FSDP gathers:
transformers 5 checkpoints each block's ``forward``, so the block's FSDP hooks stay outside the recomputation, and
the adapter units inside a block are gathered again (a local copy: they are replicated) when it is recomputed.
Tested equal to a run without either (tests/test_scale.py).

FSDP2 does not broadcast rank 0's weights as DDP does: each rank shards the model it built itself, so every rank
must build the same one (``seed_everything``; real weights read from the same files). :func:`shard_model` checks
this and refuses to train otherwise.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from rode_lightning.adapters.layer import MixtureOfLoRALinear
from rode_lightning.compat import fsdp2
from rode_lightning.dtensors import is_dtensor, is_replicated
from rode_lightning.user_errors import UserError

FSDPModule, fully_shard, register_fsdp_forward_method = fsdp2()  # public from torch 2.6, private before
_CONTAINERS = (nn.ModuleDict, nn.ModuleList)  # hold modules but are never called: FSDP's hooks would not run


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def shard_model(model: nn.Module, device_mesh) -> None:
    """Apply FSDP2 to a built model (``model/adapted.py``'s ``AdaptedModel``: its ``frozen_units()`` and
    ``forward_methods`` say what to shard and what runs it) in place, bottom-up; a no-op if done.

    ``device_mesh`` is Lightning's ``(data_parallel, tensor_parallel)`` mesh; this model has no tensor parallelism,
    so ``tensor_parallel_size`` must be 1 (``data_parallel_size`` = number of nodes x devices).
    """
    if is_sharded(model):
        return
    names = tuple(device_mesh.mesh_dim_names or ())
    if names != ("data_parallel", "tensor_parallel"):
        raise ValueError(f"expected ModelParallelStrategy's (data_parallel, tensor_parallel) device mesh, got {names}")
    if device_mesh["tensor_parallel"].size() != 1:
        raise UserError(
            f"ModelParallelStrategy: tensor_parallel_size is {device_mesh['tensor_parallel'].size()}, but this model "
            "implements no tensor parallelism; set tensor_parallel_size: 1 and data_parallel_size to the number of "
            "processes (num_nodes x devices), as configs/fsdp.yaml does")
    shard_mesh, replicate_mesh = device_mesh["data_parallel"], device_mesh
    _check_same_weights_on_every_rank(model, shard_mesh)

    trainable = list(_trainable_units(model))
    for unit in trainable:
        fully_shard(unit, mesh=replicate_mesh)
        if isinstance(unit, list):  # [experts, router] of a mixture layer
            register_fsdp_forward_method(unit[0], "forward_routed")
    frozen = model.frozen_units()
    for module in frozen:
        fully_shard(module, mesh=shard_mesh)
    # FSDP2 warns when a unit returns a view (nn.Linear's output, a reshape), because an in-place op on it would skip
    # the unit's backward hook. These units' outputs are only read out of place (FoodLMM.embed's masked_scatter,
    # MixtureOfLoRALinear's and peft's `base(x) + adapter(x)`), so the warning would only be noise.
    modules = [module for unit in trainable for module in (unit if isinstance(unit, list) else [unit])]
    unit_classes = "|".join(sorted({type(module).__name__ for module in [*modules, *frozen]}))
    warnings.filterwarnings("ignore", message=rf"FSDP2-wrapped module \(({unit_classes})\) returned a view tensor")
    leftover_trainable = any(parameter.requires_grad for parameter in _unassigned_parameters(model))
    fully_shard(model, mesh=replicate_mesh if leftover_trainable else shard_mesh)
    for method in model.forward_methods:  # generation runs the whole model outside forward
        register_fsdp_forward_method(model, method)

    sharded = [name for name, parameter in model.named_parameters()
               if parameter.requires_grad and not is_replicated(parameter)]
    if sharded:  # the adapter save reads trainable tensors on rank 0 alone; a sharded one would need all ranks
        raise RuntimeError(f"FSDP sharding left trainable tensors sharded instead of replicated: {sharded[:5]}")


def _trainable_units(module: nn.Module):
    """The largest callable submodules whose parameters are all trainable (peft's LoRA linears, the projector when
    trained), a mixture layer's experts and router as one ``[experts, router]`` group."""
    for child in module.children():
        parameters = list(child.parameters())
        if not parameters:
            continue
        if isinstance(child, MixtureOfLoRALinear) and all(
                parameter.requires_grad for parameter in [*child.experts.parameters(), *child.router.parameters()]):
            yield [child.experts, child.router]
            continue
        if all(parameter.requires_grad for parameter in parameters) and not isinstance(child, _CONTAINERS):
            yield child
        else:
            yield from _trainable_units(child)


def _unassigned_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters no unit has taken yet (those not yet DTensors), i.e. what the root unit will hold."""
    return [parameter for parameter in model.parameters() if not is_dtensor(parameter)]


def _check_same_weights_on_every_rank(model: nn.Module, mesh) -> None:
    """Each rank shards its own copy: refuse to train when the copies differ (a per-tensor float64 sum, compared
    across ranks; all ranks take the same decision, so none is left waiting in a collective)."""
    with torch.no_grad():
        sums = torch.stack([torch.sum(parameter, dtype=torch.float64) for parameter in model.parameters()])
    sums = torch.nan_to_num(sums).to(mesh.device_type)
    group = mesh.get_group()
    highest, lowest = sums.clone(), sums.clone()
    torch.distributed.all_reduce(highest, op=torch.distributed.ReduceOp.MAX, group=group)
    torch.distributed.all_reduce(lowest, op=torch.distributed.ReduceOp.MIN, group=group)
    differing = (highest != lowest).nonzero().flatten().tolist()
    if differing:
        names = [name for index, (name, _) in enumerate(model.named_parameters()) if index in set(differing)]
        raise RuntimeError(
            f"FSDP: the processes built different weights ({len(differing)} tensors differ, e.g. {names[:3]}). "
            "FSDP2 shards each process's own copy without broadcasting rank 0's; set seed_everything so that "
            "every process initialises the same model.")
