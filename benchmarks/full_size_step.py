"""Training steps of configs/rode.yaml at full size with random weights: step time and peak memory.

    python benchmarks/full_size_step.py [--steps 6] [--tiny]

For a machine with a GPU and no LLaVA weights at hand: the paper's setup (configs/rode.yaml: ViT-L/14-336, LLaMA-7B
shape, RoDE [2, 4, 8, 16] on q and k, bf16 frozen weights under bf16-mixed, activation checkpointing, batch 4) with
random frozen weights, trained on the generated demo data through the real CLI, one optimizer step per batch. It
prints the median step time (the first step left out: it pays for allocator warm-up), the peak GPU memory
(``torch.cuda.max_memory_allocated``) and, beside it, ``rode_lightning.estimate``'s figure for the same shapes and
the batches' real length (demo answers are short, so sequences are shorter than ``data.max_length``). The last line
is one JSON object.

Differences from a real run: the demo tokenizer's vocabulary (hundreds of tokens, not 32,000) makes the LM head and
the logits small; the estimate is computed with that vocabulary too. ``--tiny`` runs the same script on the demo's
tiny shapes on the CPU, to check that it works.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

REPO = Path(__file__).parents[1]
FULL_SIZE = ["--model.vision.checkpoint", "null", "--model.language.path", "null",
             "--model.language.hidden_size", "4096", "--model.language.intermediate_size", "11008",
             "--model.language.layers", "32", "--model.language.heads", "32",
             "--model.language.max_position_embeddings", "2048", "--model.language.initializer_range", "0.02"]
TINY = ["--model.vision.preset", "null", "--model.vision.checkpoint", "null", "--model.vision.image_size", "64",
        "--model.vision.patch_size", "8", "--model.vision.width", "64", "--model.vision.layers", "2",
        "--model.vision.head_width", "32", "--model.language.path", "null", "--model.language.hidden_size", "64",
        "--model.language.intermediate_size", "128", "--model.language.layers", "2", "--model.language.heads", "2",
        "--trainer.accelerator", "cpu"]
# rode.yaml's sources are real folders; here the demo copies (null), small under --tiny.
DEMO_SOURCES = "null"
TINY_DEMO_SOURCES = ("[{dataset: unifood, demo_sizes: {train: 16, val: 4, test: 4}}, "
                     "{dataset: nutrition5k, demo_sizes: {train: 32, test: 8}}]")


class StepClock(L.Callback):
    """Wall time of every training batch (forward, backward, optimizer step), and the tokens it held."""

    def __init__(self):
        self.seconds: list[float] = []
        self.tokens: list[int] = []
        self._start = 0.0

    def _sync(self, module: L.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._sync(module)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._sync(module)
        self.seconds.append(time.perf_counter() - self._start)
        self.tokens.append(int(batch.input_ids.numel()))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="training batches (one optimizer step each)")
    parser.add_argument("--tiny", action="store_true", help="the demo's tiny shapes on the CPU (a check of the script)")
    parser.add_argument("--workdir", help="where demo data and logs go (default: a temporary folder)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from rode_lightning.cli import main as cli_main
    from rode_lightning.estimate import count_parameters, memory_estimate

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="full_size_step_"))
    cli = cli_main(["--config", str(REPO / "configs" / "rode.yaml"), *(TINY if args.tiny else FULL_SIZE),
                    "--model.tokenizer", "demo", "--data.sources", TINY_DEMO_SOURCES if args.tiny else DEMO_SOURCES,
                    "--data.demo_dir", str(workdir / "demo"), "--data.num_workers", "0",
                    "--trainer.max_steps", str(args.steps), "--trainer.accumulate_grad_batches", "1",
                    "--trainer.limit_val_batches", "0", "--trainer.val_check_interval", "null",
                    "--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir",
                    str(workdir / "logs")], run=False)
    clock = StepClock()
    cli.trainer.callbacks.append(clock)
    if torch.cuda.is_available() and not args.tiny:
        torch.cuda.reset_peak_memory_stats()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)

    module, hparams = cli.model, cli.model.hparams
    language = module.language_config
    batch_size = cli.datamodule.hparams.batch_size
    sequence_length = max(clock.tokens) // batch_size
    llama = module.model.language_model.config  # the shape of the model that trained
    counts = count_parameters(module.vision_config, llama, module.adapter_config, hparams.train_projector)
    estimate = memory_estimate(counts, llama, module.adapter_config, batch_size, sequence_length, language.dtype,
                               hparams.gradient_checkpointing, module.vision_config.dtype)
    on_gpu = module.device.type == "cuda"
    peak = torch.cuda.max_memory_allocated(module.device) if on_gpu else resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss * 1024
    result = {
        "device": torch.cuda.get_device_name(module.device) if on_gpu else "cpu",
        "steps": len(clock.seconds), "batch_size": batch_size, "longest_sequence": sequence_length,
        "median_step_seconds": statistics.median(clock.seconds[1:] or clock.seconds),
        "tokens_per_second": statistics.median(t / s for t, s in zip(clock.tokens[1:], clock.seconds[1:]))
        if len(clock.seconds) > 1 else None,
        "peak_memory_gib": peak / 2**30, "peak_memory_kind": "cuda max_memory_allocated" if on_gpu else
        "process max RSS (CPU)", "estimate_gib": sum(estimate.values()) / 2**30,
        "estimate_components_gib": {name: value / 2**30 for name, value in estimate.items()},
    }
    print(f"{result['steps']} steps of batch {batch_size} x <= {sequence_length} tokens on {result['device']}: "
          f"median {result['median_step_seconds']:.3f} s per step; peak {result['peak_memory_gib']:.2f} GiB "
          f"({result['peak_memory_kind']}); estimate for these shapes {result['estimate_gib']:.2f} GiB")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
