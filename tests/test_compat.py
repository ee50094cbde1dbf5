"""Every private API of another library that rode_lightning/compat.py relies on still exists in the installed
versions, and does what compat.py says where that is cheap to check; and no other module reaches one."""

from __future__ import annotations

import argparse
import ast
import inspect
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

import rode_lightning
from rode_lightning import compat

PACKAGE = Path(rode_lightning.__file__).parent


# ----------------------------------------------------------------------------------------------------------- torch
def test_incompatible_keys_is_what_load_state_dict_returns():
    result = nn.Linear(2, 2).load_state_dict({"weight": torch.zeros(2, 2)}, strict=False)
    ours = compat.incompatible_keys(["bias"], [])
    assert type(ours) is type(result) and ours == result
    assert repr(compat.incompatible_keys([], [])) == "<All keys matched successfully>"


def test_put_tensor_replaces_parameters_and_buffers_keeping_their_kind():
    module = nn.BatchNorm1d(3)
    module.weight.requires_grad_(False)
    module.register_buffer("scratch", torch.zeros(3), persistent=False)
    compat.put_tensor(module, "weight", torch.full((3,), 2.0))
    compat.put_tensor(module, "running_mean", torch.full((3,), 5.0))
    compat.put_tensor(module, "scratch", torch.ones(3))
    assert isinstance(module.weight, nn.Parameter) and not module.weight.requires_grad
    assert torch.equal(module.weight, torch.full((3,), 2.0))
    assert torch.equal(module.running_mean, torch.full((3,), 5.0)) and torch.equal(module.scratch, torch.ones(3))
    assert "scratch" not in module.state_dict() and "running_mean" in module.state_dict()  # persistence kept


def test_is_compiled_sees_nn_module_compile():
    block = nn.Linear(2, 2)
    assert not compat.is_compiled(block)
    block.compile(backend="eager")  # lazy: nothing is compiled before the first call
    assert compat.is_compiled(block)


def test_grouped_mm_is_the_public_function_where_torch_has_it():
    assert hasattr(torch, "_grouped_mm")  # what the public function calls, and the fallback before it
    public = getattr(torch.nn.functional, "grouped_mm", None)
    assert compat.grouped_mm() is (public or torch._grouped_mm)


def test_ignore_in_ddp_sets_what_distributed_data_parallel_reads():
    module = nn.Linear(2, 2)
    compat.ignore_in_ddp(module, ["weight"])
    assert module._ddp_params_and_buffers_to_ignore == ["weight"]


def test_fsdp2_is_the_public_api():
    import torch.distributed.fsdp as fsdp

    assert compat.fsdp2() == (fsdp.FSDPModule, fsdp.fully_shard, fsdp.register_fsdp_forward_method)


# ----------------------------------------------------------------------------------------------------- lightning
def test_attached_trainer_is_none_until_a_trainer_is_attached():
    module = L.LightningModule()
    assert compat.attached_trainer(module) is None
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    module.trainer = trainer
    assert compat.attached_trainer(module) is trainer


def test_the_loop_privates_still_exist():
    from lightning.pytorch.loops.fit_loop import _FitLoop
    from lightning.pytorch.loops.training_epoch_loop import _TrainingEpochLoop

    assert callable(_FitLoop._load_combined_loader_states)
    assert callable(_TrainingEpochLoop._should_accumulate)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accumulate_grad_batches=2)
    compat.load_pending_loader_states(trainer)  # nothing pending: a no-op


def test_model_checkpoint_and_model_parallel_privates_still_exist():
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.strategies import ModelParallelStrategy

    assert ModelCheckpoint()._last_checkpoint_saved == ""  # compat reads it with a fallback: check it is there
    callback = ModelCheckpoint()
    callback._last_checkpoint_saved = "epoch=0-step=4.ckpt"
    assert compat.last_checkpoint_saved(callback) == "epoch=0-step=4.ckpt"
    assert compat.saves_distributed_checkpoint(ModelParallelStrategy()) is True
    assert compat.saves_distributed_checkpoint(ModelParallelStrategy(save_distributed_checkpoint=False)) is False


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")  # one process, no process group: on purpose
def test_a_distributed_checkpoint_folder_is_recognised_and_read_whole(tmp_path):
    from torch.distributed.checkpoint import save

    folder = tmp_path / "epoch=0-step=4.ckpt"
    save({"state_dict": {"w": torch.arange(4.0)}}, checkpoint_id=folder, no_dist=True)
    assert not compat.is_distributed_checkpoint_folder(folder)  # Lightning's own test wants its metadata file
    torch.save({"global_step": 4}, compat.sharded_checkpoint_metadata(folder))
    assert compat.sharded_checkpoint_metadata(folder).parent == folder
    assert compat.is_distributed_checkpoint_folder(folder) and compat.is_distributed_checkpoint_folder(str(folder))
    assert not compat.is_distributed_checkpoint_folder(compat.sharded_checkpoint_metadata(folder))  # a file
    checkpoint = compat.load_distributed_checkpoint(folder)
    assert checkpoint["global_step"] == 4 and torch.equal(checkpoint["state_dict"]["w"], torch.arange(4.0))


# -------------------------------------------------------------------------------------------------- transformers
def test_use_sdpa_attention_reaches_the_built_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2)
    compat.use_sdpa_attention(config)
    assert LlamaForCausalLM(config).config._attn_implementation == "sdpa"


# ----------------------------------------------------------------------------------------------------- open_clip
def test_the_open_clip_vision_tower_has_open_clip_names():
    from open_clip.model import CLIPVisionCfg

    tower = compat.build_open_clip_vision_tower(
        8, CLIPVisionCfg(layers=1, width=32, head_width=16, image_size=32, patch_size=16), quick_gelu=False)
    assert {"conv1.weight", "class_embedding", "positional_embedding", "proj"} <= set(tower.state_dict())
    assert tower(torch.zeros(1, 3, 32, 32)).shape == (1, 8)


# ------------------------------------------------------------------------------------------------------ argparse
def test_argument_action_finds_nested_keys_of_argparse_and_jsonargparse():
    from jsonargparse import ArgumentParser

    plain = argparse.ArgumentParser()
    plain.add_argument("--model.method")
    assert compat.argument_action(plain, "model.method").option_strings == ["--model.method"]
    assert compat.argument_action(plain, "model.other") is None

    @dataclass
    class Settings:
        """Settings.

        Args:
            method: the written help.
        """

        method: str = "rode"

    parser = ArgumentParser()
    parser.add_class_arguments(Settings, "model.settings")
    action = compat.argument_action(parser, "model.settings.method")
    assert action is not None and action.help == "the written help."


# ------------------------------------------------------------------------------------------------------- litserve
def test_litserve_submit_queues_the_request_and_reads_the_workers_replies():
    import asyncio
    import queue
    from types import SimpleNamespace

    from litserve import LitServer
    from litserve.utils import LitAPIStatus

    spec = SimpleNamespace(response_buffer={}, request_queue=queue.Queue(), response_queue_id=3,
                           data_streamer=LitServer.data_streamer)

    async def exchange():
        uid, replies = compat.litserve_submit(spec, {"question": "rice?"})
        response_queue_id, queued_uid, _, payload = spec.request_queue.get_nowait()
        assert (response_queue_id, queued_uid, payload) == (3, uid, {"question": "rice?"})
        item = spec.response_buffer[uid]  # what the server's reader fills with the worker's replies
        for reply in [("first", LitAPIStatus.OK), ("boom", LitAPIStatus.ERROR)]:
            item.response_queue.append(reply)
        item.event.set()
        received = [reply async for reply in replies]
        compat.litserve_forget(spec, uid)
        return received, uid

    received, uid = asyncio.run(exchange())
    assert received == [("first", False), ("boom", True)] and uid not in spec.response_buffer


# -------------------------------------------------------------------------------------------------- console.py
def test_the_warning_console_filters_is_still_raised_by_torch():
    """console.py silences this deprecation (torch's, about Lightning's use of its private pytree API); when torch
    stops raising it, the filter can go."""
    import torch.utils._pytree as pytree

    assert "`isinstance(treespec, LeafSpec)` is deprecated" in inspect.getsource(pytree)


# ------------------------------------------------------------------------------------------------ the one place
def test_no_module_but_compat_imports_a_private_name_of_another_library():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "compat.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and not node.module.startswith("rode_lightning"):
                private = [alias.name for alias in node.names if alias.name.startswith("_")]
                if private or any(part.startswith("_") for part in node.module.split(".")[1:]):
                    found.append(f"{path.relative_to(PACKAGE)}: from {node.module} import "
                                 f"{', '.join(alias.name for alias in node.names)}")
            elif isinstance(node, ast.Import):
                found += [f"{path.relative_to(PACKAGE)}: import {alias.name}" for alias in node.names
                          if any(part.startswith("_") for part in alias.name.split(".")[1:])]
    assert not found, "reach these through rode_lightning/compat.py:\n" + "\n".join(found)
