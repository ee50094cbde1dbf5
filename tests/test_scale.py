"""Scaling out: DDP and FSDP2 (ModelParallelStrategy) train the same adapters as one process on the same samples.

Each run is the real CLI with the overlay users take (configs/ddp.yaml, configs/fsdp.yaml), in a subprocess with a hard
timeout (a distributed hang must fail, not stall the suite), with 2 CPU processes talking over gloo.

How the runs see the same samples in the same optimizer steps. Under any distributed strategy Lightning replaces the
training sampler by a ``DistributedSampler(shuffle=True, seed=PL_GLOBAL_SEED)``: one permutation of the training set,
rank r taking its positions r, r + 2, ... The reference is one process that gets the same permutation (strategy ddp
with a single device: Lightning's sampler, world size one) and takes it in order. With one sample per rank, step k
of the 2-process runs sees samples 2k and 2k + 1, one per rank, and averages the two gradients; the reference sees
the same two samples as two micro-batches of one optimizer step (``accumulate_grad_batches 2``), which also averages
them. Larger per-rank batches would not do: the loss is a mean over answer tokens, and the mean of two ranks' means
equals one batch's mean only when both ranks hold as many answer tokens. Adapter dropout is off, and the learning
rate starts at its peak (no warm-up), so every step moves the weights.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from rode_lightning.adapters.saving import WEIGHTS_NAME, adapter_state_dict
from tests.cli_process import run_cli_process
from tests.conftest import TINY_DEMO_SOURCES, printed_results, tiny_cli_args

REPO = Path(__file__).parents[1]
CONFIGS = REPO / "configs"
STEPS = 3
# Same seed, same order, same arithmetic: the runs agree to the last bit on this machine; the tolerance leaves room
# for another summation order (other BLAS, thread counts) without hiding a wrong gradient (the weights move ~1e-3).
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}

pytestmark = pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs the gloo backend")

SAME_STEPS = ["--data.batch_size", "1", "--trainer.max_epochs", "1", "--model.adapter.dropout", "0",
              "--model.warmup_steps", "0", "--trainer.gradient_clip_val", "1.0"]
ONE_PROCESS = ["--trainer.strategy", "ddp", "--trainer.devices", "1", "--trainer.accumulate_grad_batches", "2",
               "--trainer.limit_train_batches", str(2 * STEPS), "--trainer.limit_val_batches", "0"]
# The overlays target GPUs: the same files, run on the CPU in full precision.
DDP = ["--config", str(CONFIGS / "ddp.yaml"), "--trainer.accelerator", "cpu", "--trainer.devices", "2",
       "--trainer.precision", "32-true", "--trainer.limit_train_batches", str(STEPS), "--trainer.limit_val_batches", "1"]
FSDP = ["--config", str(CONFIGS / "fsdp.yaml"), "--trainer.accelerator", "cpu", "--trainer.devices", "2",
        "--trainer.precision", "32-true", "--trainer.strategy.init_args.data_parallel_size", "2",
        "--trainer.limit_train_batches", str(STEPS), "--trainer.limit_val_batches", "1"]


def run_cli(subcommand: str, demo_dir: Path, log_dir: Path, *args: str) -> tuple[Path, str]:
    """Run a CLI subcommand; return the run's log directory and its output (stderr, then stdout)."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    log_dir.parent.mkdir(parents=True, exist_ok=True)
    result = run_cli_process([subcommand, *tiny_cli_args(demo_dir, log_dir, *args)], log_dir.parent, env, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return log_dir / "demo" / "version_0", result.stderr + result.stdout


def fit(demo_dir: Path, log_dir: Path, *args: str) -> tuple[Path, str]:
    return run_cli("fit", demo_dir, log_dir, *SAME_STEPS, *args)


def adapter(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "adapter" / WEIGHTS_NAME)


def validation_summary(output: str) -> dict[str, float]:
    return printed_results(output, "val")


def logged_scalar(run: Path, tag: str) -> float:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run))
    events.Reload()
    return events.Scalars(tag)[-1].value


# A training checkpoint after every optimizer step, for the resume tests.
EVERY_STEP = ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
              "--trainer.callbacks.every_n_train_steps", "1", "--trainer.callbacks.save_top_k", "-1"]
# Lightning's other checkpoint format under FSDP: one file instead of a folder of per-rank shards.
SINGLE_FILE = ["--trainer.strategy.init_args.save_distributed_checkpoint", "false"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cli_demo_dir) -> dict[str, tuple[Path, str]]:
    root = tmp_path_factory.mktemp("scale")
    top1 = ["--model.adapter.method", "top1"]  # a router with an auxiliary loss
    return {name: fit(cli_demo_dir, root / name / "logs", *args)
            for name, args in (("one_process", ONE_PROCESS), ("ddp", [*DDP, *EVERY_STEP]),
                               ("fsdp", [*FSDP, *EVERY_STEP]), ("one_process_top1", [*ONE_PROCESS, *top1]),
                               ("fsdp_top1", [*FSDP, *top1, *SINGLE_FILE, *EVERY_STEP]))}


def checkpoint_at(run: Path, step: int) -> Path:
    return next(run.glob(f"checkpoints/*-step={step}.ckpt"))


@pytest.mark.parametrize("strategy, method", [("ddp", "rode"), ("fsdp", "rode"), ("fsdp", "top1")])
def test_two_processes_train_the_adapter_one_process_trains(runs, strategy, method):
    suffix = "" if method == "rode" else f"_{method}"
    run, output = runs[strategy + suffix]
    assert "MEMBER: 2/2" in output, output[-2000:]
    if strategy == "fsdp":
        assert "FSDPFoodLMM" in output  # the model summary names the sharded root
        saved = yaml.safe_load((run / "config.yaml").read_text())
        assert saved["model"]["gradient_checkpointing"] is True  # from configs/fsdp.yaml, recomputed per block
        assert saved["trainer"]["strategy"]["class_path"] == "rode_lightning.scale.strategy.AdapterFSDPStrategy"
    expected, trained = adapter(runs["one_process" + suffix][0]), adapter(run)
    assert set(trained) == set(expected)
    assert any(name.endswith("lora_B") for name in expected)
    # B starts at zero: it is non-zero only if the optimizer stepped, and equal only if the steps were the same.
    assert all(expected[name].abs().max() > 0 for name in expected if name.endswith("lora_B"))
    for name, tensor in expected.items():
        torch.testing.assert_close(trained[name], tensor, **TOLERANCE, msg=lambda message: f"{name}: {message}")


def test_fsdp_validation_is_reduced_across_ranks_as_under_ddp(runs):
    """Both runs validate the same samples with the same per-rank batches and (per the test above) the same weights,
    so FSDP's metrics, gathered from both ranks, must be DDP's, which tests/test_distributed.py checks in depth."""
    ddp_run, ddp_output = runs["ddp"]
    fsdp_run, fsdp_output = runs["fsdp"]
    ddp, fsdp = validation_summary(ddp_output), validation_summary(fsdp_output)
    assert {"val/unifood/category_accuracy", "val/nutrition5k/ingredient_iou", "val/nutrition5k/pmae_average"} <= set(fsdp)
    assert fsdp.keys() == ddp.keys()
    for name, value in ddp.items():
        assert fsdp[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    # The loss is the mean over ranks of each rank's mean (sync_dist): on one rank alone it would differ.
    assert logged_scalar(fsdp_run, "val/loss") == pytest.approx(logged_scalar(ddp_run, "val/loss"), rel=1e-5)
    assert (fsdp_run / "results" / "val_results.md").is_file()


def test_the_fsdp_adapter_loads_into_a_one_process_model(runs, cli_demo_dir):
    """``--model.adapter_path`` with an adapter written by rank 0 under FSDP: plain tensor names (no FSDP prefixes),
    whole shapes, and the same outputs as the one-process adapter on the same frozen model."""
    from rode_lightning.adapters.config import AdapterConfig
    from rode_lightning.data.datamodule import FoodDataModule
    from rode_lightning.model.language import LanguageConfig
    from rode_lightning.model.module import FoodLMMModule
    from rode_lightning.model.vision import VisionConfig

    model_config = yaml.safe_load((CONFIGS / "demo.yaml").read_text())["model"]

    def build(adapter_dir: Path) -> FoodLMMModule:
        torch.manual_seed(0)  # the same frozen model for both adapters
        # The runs used tiny_cli_args' random model of the demo's shape, not the pre-trained base.
        module = FoodLMMModule(vision=VisionConfig(**{**model_config["vision"], "checkpoint": None}),
                               language=LanguageConfig(),
                               adapter=AdapterConfig(**{**model_config["adapter"], "dropout": 0.0}),
                               max_new_tokens=4, adapter_path=str(adapter_dir))
        module.configure_model()
        module.configure_model()  # idempotent
        return module.eval()

    from_fsdp, from_one_process = build(runs["fsdp"][0] / "adapter"), build(runs["one_process"][0] / "adapter")
    loaded = adapter_state_dict(from_fsdp.model)
    assert set(loaded) == set(adapter(runs["fsdp"][0]))
    for name, tensor in adapter(runs["fsdp"][0]).items():
        assert torch.equal(loaded[name], tensor), name

    data = FoodDataModule(demo_dir=str(cli_demo_dir), sources=yaml.safe_load(TINY_DEMO_SOURCES), eval_batch_size=4,
                          max_length=256)
    data.setup("validate")
    data.conversation_format = from_fsdp.conversation_format
    batch = next(iter(data.val_dataloader()))
    with torch.no_grad():
        logits = [module.forward_batch(batch) for module in (from_fsdp, from_one_process)]
    torch.testing.assert_close(logits[0], logits[1], **TOLERANCE)
    assert from_fsdp.generate_answers(batch) == from_one_process.generate_answers(batch)


@pytest.mark.parametrize("name, extra", [("ddp", []), ("fsdp", []), ("fsdp_top1", ["--model.adapter.method", "top1",
                                                                                  *SINGLE_FILE])],
                         ids=["ddp", "fsdp-sharded-checkpoint", "fsdp-single-file-checkpoint"])
def test_two_processes_resume_mid_epoch_exactly(runs, cli_demo_dir, tmp_path, name, extra):
    """Resumed with ``--ckpt_path`` from the checkpoint of step 1 (of 3, one epoch), the run trains steps 2 and 3 on
    the samples the uninterrupted run took there and ends with its weights, bit for bit."""
    full_run, _ = runs[name]
    overlay = DDP if name == "ddp" else FSDP
    resumed, _ = fit(cli_demo_dir, tmp_path / "logs", *overlay, *extra, *EVERY_STEP, "--ckpt_path",
                          str(checkpoint_at(full_run, 1)))
    expected, trained = adapter(full_run), adapter(resumed)
    assert set(trained) == set(expected)
    for tensor_name, tensor in expected.items():
        assert torch.equal(trained[tensor_name], tensor), tensor_name
    # It went on from step 1 (it did not start over, which would also save step 1).
    assert sorted(path.name for path in (resumed / "checkpoints").iterdir()) == ["epoch=0-step=2.ckpt",
                                                                               "epoch=0-step=3.ckpt"]


def test_fsdp_checkpoints_hold_only_the_trainable_state(runs):
    """Both FSDP formats: the sharded folder's index and the single file name the trainable tensors and nothing
    frozen; the single file loads into a one-process module as it was at that step."""
    from torch.distributed.checkpoint import FileSystemReader

    from rode_lightning.model.module import FoodLMMModule

    adapter_names = set(adapter(runs["fsdp"][0]))
    sharded = FileSystemReader(str(checkpoint_at(runs["fsdp"][0], 3))).read_metadata()
    tensors = {key.removeprefix("state_dict.") for key in sharded.state_dict_metadata if key.startswith("state_dict.")}
    assert tensors and {f"model.{name}" for name in adapter_names} <= tensors
    assert all(".experts." in name or ".router." in name or ".projector." in name for name in tensors), tensors

    path = checkpoint_at(runs["fsdp_top1"][0], 3)
    assert path.is_file()
    saved = torch.load(path, weights_only=True)
    torch.manual_seed(0)  # the demo's frozen weights, as every rank built them
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*frozen weights.*")
        module = FoodLMMModule.load_from_checkpoint(path)
    trainable = {name for name, parameter in module.named_parameters() if parameter.requires_grad}
    assert set(saved["state_dict"]) == trainable
    final = adapter(runs["fsdp_top1"][0])  # written after step 3, the checkpoint's step
    loaded = adapter_state_dict(module.model)
    for name, tensor in final.items():
        assert torch.equal(loaded[name], tensor), name


@pytest.mark.parametrize("name", ["fsdp", "fsdp_top1"], ids=["sharded-checkpoint", "single-file-checkpoint"])
def test_fsdp_checkpoints_fingerprint_the_sharded_frozen_weights(runs, name):
    """Rank 0 holds the first part of every sharded frozen tensor, so the checkpoint it writes keeps their first
    values: loaded onto the frozen model it was trained with, nothing is said; onto another, a warning."""
    from rode_lightning.scale.checkpointing import FINGERPRINT_KEY
    from rode_lightning.model.module import FoodLMMModule
    from rode_lightning.scale.sharded_checkpoint import read_sharded_checkpoint

    path = checkpoint_at(runs[name][0], 3)
    checkpoint = read_sharded_checkpoint(path) if path.is_dir() else torch.load(path, weights_only=True)
    fingerprint = checkpoint[FINGERPRINT_KEY]
    torch.manual_seed(0)  # the demo's frozen weights, as every rank built them
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*frozen weights.*")
        module = FoodLMMModule.load_from_checkpoint(path)
    frozen = {name: p for name, p in module.named_parameters() if not p.requires_grad}
    # Every frozen tensor, the sharded decoder blocks included, with the whole tensor's first values.
    assert set(fingerprint) == set(frozen)
    block_weight = next(name for name in frozen if ".layers.1." in name and name.endswith("weight"))
    assert torch.equal(fingerprint[block_weight], frozen[block_weight].detach().flatten()[:8].double())

    torch.manual_seed(1)  # another random frozen model
    with pytest.warns(UserWarning, match="frozen weights of this model differ"):
        FoodLMMModule.load_from_checkpoint(path)


def test_a_sharded_fsdp_checkpoint_is_read_in_one_process(runs, cli_demo_dir, tmp_path):
    """The sharded folder (FSDP's default format) without FSDP: ``load_from_checkpoint`` gives the weights of that
    step, its name-keyed optimizer state loads into the plain AdamW one process builds, and ``validate --ckpt_path``
    in one process scores what ``validate --model.adapter_path`` scores with the same weights."""
    from rode_lightning.model.module import FoodLMMModule
    from rode_lightning.scale.sharded_checkpoint import read_sharded_checkpoint

    fsdp_run = runs["fsdp"][0]
    folder = checkpoint_at(fsdp_run, 3)
    assert folder.is_dir()
    torch.manual_seed(0)
    module = FoodLMMModule.load_from_checkpoint(folder)
    loaded = adapter_state_dict(module.model)
    final = adapter(fsdp_run)  # written after step 3, the checkpoint's step
    assert set(loaded) == set(final)
    for name, tensor in final.items():
        assert torch.equal(loaded[name], tensor), name

    checkpoint = read_sharded_checkpoint(folder)
    assert checkpoint["global_step"] == 3 and "optimizer_0" not in checkpoint
    saved_state = checkpoint["optimizer_states"][0]["state"]
    trainable = [(name, p) for name, p in module.named_parameters() if p.requires_grad]  # configure_optimizers' order
    optimizer = torch.optim.AdamW([parameter for _, parameter in trainable])
    optimizer.load_state_dict(checkpoint["optimizer_states"][0])
    assert set(saved_state) == {name for name, _ in trainable}
    for name, parameter in trainable:
        assert saved_state[name]["exp_avg"].abs().max() > 0, name
        assert torch.equal(optimizer.state[parameter]["exp_avg"], saved_state[name]["exp_avg"]), name

    one_process = ["--trainer.strategy", "auto", "--trainer.devices", "1", "--trainer.limit_val_batches", "2"]
    _, from_folder = run_cli("validate", cli_demo_dir, tmp_path / "folder" / "logs", *one_process,
                             "--ckpt_path", str(folder))
    folder_results = validation_summary(from_folder)  # read now: both runs write into the FSDP run's validate/
    _, from_adapter = run_cli("validate", cli_demo_dir, tmp_path / "adapter" / "logs", *one_process,
                              "--model.adapter_path", str(fsdp_run / "adapter"))
    assert f"Loaded model weights from the checkpoint at {folder}" in from_folder
    # Every metric and the validation loss, to full precision.
    assert folder_results == validation_summary(from_adapter)
    assert f"val results written to {fsdp_run / 'validate' / 'results' / 'val_results.md'}" in from_adapter

    # Training resumed in one process from the folder of step 1 goes on at step 2; its data restarts the epoch, as
    # each process's share of it changed, and says so.
    resumed, output = fit(cli_demo_dir, tmp_path / "resumed" / "logs", *one_process, *EVERY_STEP,
                          "--trainer.limit_train_batches", str(STEPS), "--ckpt_path", str(checkpoint_at(fsdp_run, 1)))
    assert sorted(path.name for path in (resumed / "checkpoints").iterdir()) == ["epoch=0-step=2.ckpt",
                                                                               "epoch=0-step=3.ckpt"]
    assert "resuming training data mid-epoch" in output

    with pytest.raises(FileNotFoundError, match=f"{fsdp_run.name}.*not a sharded checkpoint folder"):
        read_sharded_checkpoint(fsdp_run)


def test_fsdp_in_the_paper_precision_trains_and_resumes_exactly(cli_demo_dir, tmp_path):
    """configs/fsdp.yaml with configs/rode.yaml's precision: bf16 frozen weights sharded (and all-gathered in bf16),
    fp32 adapters replicated, bf16 autocast. It trains, and a run resumed from the sharded checkpoint of step 1 ends
    with the uninterrupted run's weights, bit for bit."""
    paper_precision = [*(argument if argument != "32-true" else "bf16-mixed" for argument in FSDP),
                       "--model.language.dtype", "bf16", "--model.vision.dtype", "bf16", *EVERY_STEP]
    full, output = fit(cli_demo_dir, tmp_path / "full" / "logs", *paper_precision)
    assert "Using bfloat16 Automatic Mixed Precision" in output and "MEMBER: 2/2" in output
    trained = adapter(full)
    assert all(tensor.dtype == torch.float32 and torch.isfinite(tensor).all() for tensor in trained.values())
    assert all(trained[name].abs().max() > 0 for name in trained if name.endswith("lora_B"))
    resumed, _ = fit(cli_demo_dir, tmp_path / "resumed" / "logs", *paper_precision,
                     "--ckpt_path", str(checkpoint_at(full, 1)))
    for name, tensor in adapter(resumed).items():
        assert torch.equal(tensor, trained[name]), name


def test_configure_model_shards_once_and_keeps_trainable_tensors_whole(tmp_path):
    """FSDP2 in-process on a one-process gloo group: sharding happens in configure_model, a second call changes
    nothing, frozen tensors are sharded (on one rank, trivially), trainable ones replicated, and the model trains and
    generates through its FSDP units."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule

    from rode_lightning.adapters.config import AdapterConfig
    from rode_lightning.model.module import FoodLMMModule
    from rode_lightning.dtensors import is_replicated

    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1, 1), mesh_dim_names=("data_parallel", "tensor_parallel"))
        module = FoodLMMModule(adapter=AdapterConfig(method="top1", ranks=[2, 4], dropout=0.0),
                               gradient_checkpointing=True)
        module._device_mesh = mesh
        module.configure_model()
        parameters = dict(module.model.named_parameters())
        module.configure_model()
        assert {name: id(p) for name, p in module.model.named_parameters()} == {n: id(p) for n, p in parameters.items()}

        model = module.model
        assert isinstance(model, FSDPModule)
        assert all(isinstance(layer, FSDPModule) for layer in model.language_model.model.layers)
        assert isinstance(model.projector, FSDPModule) and isinstance(model.vision, FSDPModule)
        trainable = {name for name, p in parameters.items() if p.requires_grad}
        assert trainable and all(is_replicated(parameters[name]) for name in trainable)
        frozen_block = model.language_model.model.layers[0].input_layernorm.weight
        assert [placement.is_shard() for placement in frozen_block.placements] == [True]  # 1-D mesh: sharded

        image_tokens = [model.image_token_id] * model.num_image_tokens
        input_ids = torch.tensor([image_tokens + [5, 6, 7, 8]] * 2)
        images = torch.randn(2, 3, 64, 64)
        model.train()
        logits = model(input_ids, torch.ones_like(input_ids), images)
        (logits.float().mean() + model.auxiliary_loss()).backward()
        assert all(parameters[name].grad is not None for name in trainable)
        model.eval()
        new_tokens = model.generate(input_ids, torch.ones_like(input_ids), images, max_new_tokens=2)
        assert new_tokens.shape[0] == 2
        assert all(not hasattr(tensor, "placements") for tensor in adapter_state_dict(model).values())
    finally:
        torch.distributed.destroy_process_group()


def test_plain_model_parallel_strategy_is_pointed_to_the_resumable_one():
    """Lightning's own ModelParallelStrategy would write checkpoints this module cannot resume from: say so."""
    from lightning.pytorch.strategies import ModelParallelStrategy

    from rode_lightning.scale.strategy import AdapterFSDPStrategy, warn_if_checkpoints_cannot_resume

    with pytest.warns(UserWarning, match="ModelParallelStrategy: its checkpoints cannot be resumed.*AdapterFSDPStrategy"):
        warn_if_checkpoints_cannot_resume(ModelParallelStrategy())
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*cannot be resumed.*")
        warn_if_checkpoints_cannot_resume(AdapterFSDPStrategy())
