"""Scaling out on model.base: transformers (a tiny Qwen2.5-VL): DDP and FSDP2 train the adapter one process trains,
and an interrupted fit resumes bit for bit. The same runs and reasoning as tests/test_scale.py (read its
docstring: why one sample per rank, two micro-batches in the reference, no dropout, no warm-up); here FSDP shards
the model by its own block classes (``_no_split_modules``: Qwen2_5_VLDecoderLayer, Qwen2_5_VLVisionBlock) and
recomputes them with transformers' gradient checkpointing (configs/fsdp.yaml). An interrupted fit resumes bit for
bit under both."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from tests.test_scale import DDP, EVERY_STEP, FSDP, ONE_PROCESS, TOLERANCE, adapter, checkpoint_at, fit
from tests.tiny_families import END_OF_TURN, build_tiny_family

pytestmark = pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs the gloo backend")


@pytest.fixture(scope="module")
def qwen_base(tmp_path_factory) -> list[str]:
    directory = build_tiny_family("qwen2_5_vl", tmp_path_factory.mktemp("qwen2_5_vl"))
    return ["--model.base", "transformers", "--model.transformers.path", str(directory),
            "--model.transformers.dtype", "fp32", "--model.transformers.end_of_turn", END_OF_TURN["qwen2_5_vl"]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cli_demo_dir, qwen_base) -> dict[str, tuple[Path, str]]:
    root = tmp_path_factory.mktemp("scale_transformers")
    return {name: fit(cli_demo_dir, root / name / "logs", *qwen_base, *args)
            for name, args in (("one_process", ONE_PROCESS), ("ddp", [*DDP, *EVERY_STEP]),
                               ("fsdp", [*FSDP, *EVERY_STEP]))}


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_train_the_adapter_one_process_trains(runs, strategy):
    run, output = runs[strategy]
    assert "MEMBER: 2/2" in output, output[-2000:]
    if strategy == "fsdp":
        assert "FSDPTransformersLMM" in output  # the model summary names the sharded root
        saved = yaml.safe_load((run / "config.yaml").read_text())
        assert saved["model"]["gradient_checkpointing"] is True
    expected, trained = adapter(runs["one_process"][0]), adapter(run)
    assert set(trained) == set(expected)
    assert any(".model.language_model." in name for name in expected)
    lora_b = [name for name in expected if name.endswith("lora_B")]
    assert lora_b and all(expected[name].abs().max() > 0 for name in lora_b)
    for name, tensor in expected.items():
        torch.testing.assert_close(trained[name], tensor, **TOLERANCE, msg=lambda message: f"{name}: {message}")


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_an_interrupted_fit_resumes_bit_for_bit(runs, cli_demo_dir, qwen_base, tmp_path, strategy):
    full_run, _ = runs[strategy]
    overlay = DDP if strategy == "ddp" else FSDP
    resumed, _ = fit(cli_demo_dir, tmp_path / "logs", *qwen_base, *overlay, *EVERY_STEP, "--ckpt_path",
                     str(checkpoint_at(full_run, 1)))
    expected, trained = adapter(full_run), adapter(resumed)
    assert set(trained) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(trained[name], tensor), name


def test_a_checkpoint_of_the_transformers_base_loads_in_one_process(runs):
    """``load_from_checkpoint`` of FSDP's sharded checkpoint folder of the last step rebuilds the transformers base
    from its hyperparameters (the model directory) and holds the adapter the run saved at its end."""
    from rode_lightning.adapters.saving import adapter_state_dict
    from rode_lightning.model.module import FoodLMMModule

    run, _ = runs["fsdp"]
    module = FoodLMMModule.load_from_checkpoint(checkpoint_at(run, 3))
    assert module.hparams.base == "transformers"
    loaded = adapter_state_dict(module.model)
    final = adapter(run)
    assert set(loaded) == set(final)
    for name, tensor in final.items():
        assert torch.equal(loaded[name], tensor), name
