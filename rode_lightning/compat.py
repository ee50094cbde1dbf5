"""Every private API of another library that the package relies on, each behind one small named function.

A name with a leading underscore may change in any release of its library, and pyproject.toml's upper bounds stop
at the versions tested. When an upgrade breaks one, the fix is here, in one place, and ``tests/test_compat.py``
(which checks that every name below still exists, and what it does where that is cheap) names which one. Each entry
says what it is for and which public API would replace it.

The libraries are imported inside the functions: this module is on the ground floor (README.md, Layout), imported
by modules that may never need torch's distributed package or open_clip, and by none that could import it back.

Three private-looking things are not here. ``rode_lightning/__init__.py`` drops torch's pytree warning about the
Enums torchao registers (a log filter on a logger name, no API). ``console.py`` filters a deprecation warning that
torch's private ``torch.utils._pytree`` raises on Lightning's behalf; it calls no private API itself (and a
ground-floor module cannot import another). ``FoodLMMModule`` reads ``self.device_mesh``, Lightning's public
property, not its ``_device_mesh``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable


# ----------------------------------------------------------------------------------------------------------- torch
def incompatible_keys(missing_keys: list[str], unexpected_keys: list[str]):
    """What ``nn.Module.load_state_dict`` returns (``torch.nn.modules.module._IncompatibleKeys``), so that an
    override returns the same type: a named tuple that prints as ``<All keys matched successfully>`` when both lists
    are empty. Public replacement: none; torch documents only its two fields."""
    from torch.nn.modules.module import _IncompatibleKeys

    return _IncompatibleKeys(missing_keys, unexpected_keys)


def put_tensor(module, name: str, tensor) -> None:
    """Put ``tensor`` in place of ``module``'s own parameter or buffer ``name`` (a parameter keeps its
    ``requires_grad``; a name that is neither becomes a buffer), writing torch's ``_parameters`` / ``_buffers``
    dicts directly: the weight readers swap a meta-device model's tensors for the checkpoint's, one by one, and a
    buffer keeps whether it is persistent. Public replacement: ``register_parameter`` / ``register_buffer`` (to keep
    a buffer's persistence they would need the private ``_non_persistent_buffers_set``)."""
    from torch import nn

    if name in module._parameters:
        old = module._parameters[name]
        module._parameters[name] = nn.Parameter(tensor, requires_grad=old.requires_grad if old is not None else False)
    else:
        module._buffers[name] = tensor


def is_compiled(module) -> bool:
    """Whether ``module.compile()`` (``nn.Module.compile``, in place) has been called on ``module``: it sets the
    private ``_compiled_call_impl`` that ``__call__`` then runs. Public replacement: none (``torch.compile(module)``
    returns a wrapper, which would change the module's name in the state dict)."""
    return getattr(module, "_compiled_call_impl", None) is not None


def grouped_mm() -> Callable | None:
    """PyTorch's grouped GEMM: the public ``torch.nn.functional.grouped_mm`` where torch has it, else the private
    ``torch._grouped_mm`` of the releases before it (the public function calls it); None when neither exists, and the
    experts then run one matmul per expert."""
    import torch

    return getattr(torch.nn.functional, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)


def fsdp2() -> tuple[type, Callable, Callable]:
    """``(FSDPModule, fully_shard, register_fsdp_forward_method)``: public in ``torch.distributed.fsdp`` since torch
    2.6; torch 2.4 and 2.5 (pyproject.toml's lower bound) had them only in the private
    ``torch.distributed._composable.fsdp``."""
    try:
        from torch.distributed.fsdp import FSDPModule, fully_shard, register_fsdp_forward_method
    except ImportError:  # torch 2.4, 2.5
        from torch.distributed._composable.fsdp import FSDPModule, fully_shard, register_fsdp_forward_method
    return FSDPModule, fully_shard, register_fsdp_forward_method


# ----------------------------------------------------------------------------------------------------- lightning
def ignore_in_ddp(module, names: list[str]) -> None:
    """Leave ``module``'s parameters and buffers ``names`` out of DistributedDataParallel: out of the broadcast of
    rank 0's tensors when DDP wraps the module, and out of gradient reduction. A quantized frozen base
    (``model.quantization``) needs it: torchao's tensor subclasses cannot be broadcast (no ``view``), and every process
    quantizes the same weights itself. Sets ``module._ddp_params_and_buffers_to_ignore`` through torch's private
    ``DistributedDataParallel._set_params_and_buffers_to_ignore_for_model``. Public replacement: none."""
    from torch.nn.parallel import DistributedDataParallel

    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, names)


def attached_trainer(module):
    """The trainer ``module`` (a LightningModule) is attached to, or None. Uses no private name: Lightning's public
    ``trainer`` property raises ``RuntimeError`` for a module not attached (``load_from_checkpoint``, a test that
    builds the module alone), and this turns that into None rather than read its private ``_trainer``."""
    try:
        return module.trainer
    except RuntimeError:
        return None


def accumulating_gradients(trainer) -> bool:
    """Whether the training batch that just ended is inside a gradient-accumulation window (no optimizer step
    after it), as Lightning's own loop decides it, last batch of the epoch and strategies that accumulate
    themselves included: ``fit_loop.epoch_loop._should_accumulate()``. Public replacement: none (counting
    ``accumulate_grad_batches`` by hand misses the epoch's last batch)."""
    return trainer.fit_loop.epoch_loop._should_accumulate()


def load_pending_loader_states(trainer) -> None:
    """Load the training loader's state that Lightning took from a checkpoint but has not given to the loader yet
    (``fit_loop._load_combined_loader_states``; Lightning issue #20550: a loader built before the checkpoint was read
    never receives it). A no-op where there is none, or where Lightning no longer has the method. Public
    replacement: none; a fix of the issue would make the call unnecessary."""
    load = getattr(trainer.fit_loop, "_load_combined_loader_states", None)
    if load is not None:
        load()


def last_checkpoint_saved(callback) -> str:
    """The file a ``ModelCheckpoint`` wrote last, whichever of its rules wrote it (``_last_checkpoint_saved``;
    empty before the first). Public replacement: ``last_model_path``, set only with ``save_last``."""
    return getattr(callback, "_last_checkpoint_saved", "") or ""


def saves_distributed_checkpoint(strategy) -> bool:
    """``ModelParallelStrategy``'s ``save_distributed_checkpoint`` argument (a folder of shards, not one file),
    which it keeps as ``_save_distributed_checkpoint``. Public replacement: none."""
    return bool(strategy._save_distributed_checkpoint)


def sharded_checkpoint_metadata(folder: str | Path) -> Path:
    """The file in a sharded checkpoint folder that holds everything but the tensors (loops, schedulers,
    hyperparameters), by Lightning's name for it (``lightning.fabric.utilities.load._METADATA_FILENAME``,
    ``meta.pt``). Public replacement: none."""
    from lightning.fabric.utilities.load import _METADATA_FILENAME

    return Path(folder) / _METADATA_FILENAME


def is_distributed_checkpoint_folder(path: str | Path) -> bool:
    """Whether ``path`` is a checkpoint folder Lightning wrote with torch.distributed.checkpoint, by Lightning's own
    test (``lightning.fabric.strategies.fsdp._is_sharded_checkpoint``: a folder holding ``meta.pt``). Public
    replacement: none."""
    from lightning.fabric.strategies.fsdp import _is_sharded_checkpoint

    return _is_sharded_checkpoint(Path(path))


def load_distributed_checkpoint(folder: str | Path) -> dict[str, Any]:
    """A sharded checkpoint folder read whole into one dict on the CPU, in one process without a process group
    (``lightning.fabric.utilities.load._load_distributed_checkpoint``). Public replacement: Lightning's
    ``fabric consolidate`` command line, which writes a file instead."""
    from lightning.fabric.utilities.load import _load_distributed_checkpoint

    return _load_distributed_checkpoint(Path(folder))


# -------------------------------------------------------------------------------------------------- transformers
def use_sdpa_attention(config) -> None:
    """Make a model built from ``config`` (a transformers ``PretrainedConfig``) use PyTorch's
    ``scaled_dot_product_attention``, by its private ``_attn_implementation`` setter (which also sets sub-configs).
    Public replacement: ``attn_implementation="sdpa"`` given when the config or model is made, or
    ``PreTrainedModel.set_attn_implementation``; here configs are made in several places and read from files."""
    config._attn_implementation = "sdpa"


# ----------------------------------------------------------------------------------------------------- open_clip
def build_open_clip_vision_tower(embed_dim: int, vision_cfg, quick_gelu: bool):
    """open_clip's image tower alone, as ``open_clip.create_model`` builds it inside a CLIP
    (``open_clip.model._build_vision_tower``), so that its weights have open_clip's names. Public replacement:
    ``open_clip.create_model(...).visual``, which would build and discard the text tower."""
    from open_clip.model import _build_vision_tower

    return _build_vision_tower(embed_dim=embed_dim, vision_cfg=vision_cfg, quick_gelu=quick_gelu)


# ------------------------------------------------------------------------------------------------------ argparse
def argument_action(parser, dest: str):
    """The action of ``parser`` (argparse's, or jsonargparse's, whose nested keys are dotted destinations such as
    ``model.adapter.method``) that stores ``dest``, or None: the command line sets help text that only exists once
    the parser is built. argparse keeps its actions in ``_actions`` (unchanged since Python 2.7); neither argparse
    nor jsonargparse has a public lookup (jsonargparse's ``find_action`` is private too)."""
    return next((action for action in parser._actions if action.dest == dest), None)


# ------------------------------------------------------------------------------------------------------- litserve
def litserve_submit(spec, payload):
    """Queue ``payload`` for a LitServe spec's inference worker and return ``(uid, replies)``: ``replies`` an async
    iterator of ``(data, failed)``, the worker's encoded outputs for it (``failed``: ``data`` is the worker's error),
    ending when the worker finishes it. What LitServe's own ``OpenAISpec.chat_completion`` does: the request tuple
    ``(response_queue_id, uid, time.monotonic(), payload)`` on ``spec.request_queue``, a ``ResponseBufferItem`` in
    ``spec.response_buffer`` under ``uid`` (remove it with :func:`litserve_forget` when the answer is no longer
    awaited) and the server's ``data_streamer``. These are the spec interface's undocumented members (LitServe
    0.2.x). Public replacement: none; a spec is LitServe's way to add endpoints that feed the worker."""
    import asyncio
    import time
    import uuid
    from collections import deque

    from litserve.utils import LitAPIStatus, ResponseBufferItem

    uid = str(uuid.uuid4())
    replies: deque = deque()
    event = asyncio.Event()
    spec.response_buffer[uid] = ResponseBufferItem(response_queue=replies, event=event)
    spec.request_queue.put((spec.response_queue_id, uid, time.monotonic(), payload))

    async def stream():
        async for data, status in spec.data_streamer(replies, event, send_status=True):
            yield data, status == LitAPIStatus.ERROR

    return uid, stream()


def litserve_forget(spec, uid: str) -> None:
    """Drop ``uid``'s reply buffer (see :func:`litserve_submit`): later replies of the worker for it are discarded."""
    spec.response_buffer.pop(uid, None)
