"""Every adapter variant in configs/variants trains the demo from configuration alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rode_lightning.adapters.inject import adapter_layers
from rode_lightning.cli import main
from tests.conftest import tiny_cli_args

VARIANTS = sorted((Path(__file__).parents[1] / "configs" / "variants").glob("*.yaml"))


def test_the_paper_ablation_variants_are_all_there():
    names = {path.stem for path in VARIANTS}
    assert {"lora_r8", "lora_r32", "top1_8x4", "softmax_8x4", "rode_8x4", "softmax_2468", "rode_2468",
            "rode_5x4", "rode_2_4_8_16", "cluster_8x4"} <= names


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda path: path.stem)
def test_variant_trains_a_few_steps(cli_demo_dir, tmp_path, variant):
    expected = yaml.safe_load(variant.read_text())["model"]["adapter"]
    cli = main(["fit", *tiny_cli_args(cli_demo_dir, tmp_path / "logs", "--trainer.limit_train_batches", "2",
                                      "--trainer.limit_val_batches", "1", "--trainer.max_epochs", "1",
                                      "--config", str(variant))])
    config = cli.model.adapter_config
    assert config.method == expected["method"] and config.ranks == expected["ranks"]
    # The base config's other adapter keys survive the variant's partial override.
    assert config.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert cli.trainer.global_step == 2
    layers = adapter_layers(cli.model.model.language_model)
    if config.method == "lora":
        assert not layers
    else:
        extra = 1 if config.method == "cluster" else 0
        assert all(layer.num_experts == len(config.ranks) + extra for layer in layers.values())
    # fit leaves an adapter-only checkpoint that loads back into a fresh model.
    assert (Path(cli.trainer.log_dir) / "adapter" / "adapter.safetensors").is_file()


# ------------------------------------------------------------------------- every config file, and the 7B count

CONFIGS = Path(__file__).parents[1] / "configs"
# Whole configs (the others are overlays on demo.yaml): the demo, the paper's LLaVA-1.5 and its recipe on modern bases.
BASES = [CONFIGS / name for name in ("demo.yaml", "rode.yaml", "rode_qwen2_5_vl_7b.yaml", "rode_qwen3_vl_8b.yaml")]
OVERLAYS = sorted(path for path in CONFIGS.rglob("*.yaml") if path not in BASES and "grids" not in path.parts)
GRIDS = sorted((CONFIGS / "grids").glob("*.yaml"))


@pytest.mark.parametrize("grid_file", GRIDS, ids=lambda path: path.name)
def test_every_grid_file_is_valid(grid_file, monkeypatch):
    """Grid files name configs relative to the repository root, where the README runs them."""
    from rode_lightning.experiments.grid import Grid

    monkeypatch.chdir(CONFIGS.parent)
    grid = Grid.from_file(grid_file.relative_to(CONFIGS.parent))
    assert grid.reference in grid.variants
    assert len(grid.runs) == sum(len(grid.seeds_of(variant)) for variant in grid.variants)


@pytest.mark.parametrize("config", BASES + OVERLAYS, ids=lambda path: str(path.relative_to(CONFIGS)))
def test_every_config_file_is_valid_for_the_cli(config, capsys):
    """As litgpt checks its config hub: each base config alone, each overlay on top of the demo, through the real
    parser (unknown keys, wrong types and bad values fail here, not after a GPU was rented)."""
    files = [config] if config in BASES else [CONFIGS / "demo.yaml", config]
    args = [item for path in files for item in ("--config", str(path))]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--print_config"])
    assert exit_info.value.code == 0, capsys.readouterr().err
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["adapter"]["ranks"]



LEGACY = Path(__file__).parent / "legacy_configs"


@pytest.mark.parametrize("legacy", sorted(LEGACY.glob("*.yaml")), ids=lambda path: path.name)
def test_every_config_file_reads_the_same_in_the_old_data_keys(legacy, capsys):
    """``tests/legacy_configs`` keeps each config of ``configs/`` as it was written before ``data.sources``: parsed,
    it gives the same configuration as today's file, with a warning that shows the new form."""
    def printed(path: Path) -> dict:
        files = [path] if path.name != "demo_all_layouts.yaml" else [CONFIGS / "demo.yaml", path]
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", *[item for file in files for item in ("--config", str(file))], "--print_config"])
        assert exit_info.value.code == 0, capsys.readouterr().err
        config = yaml.safe_load(capsys.readouterr().out)
        config.pop("config", None)  # the files' own paths, where printed
        return config

    today = printed(CONFIGS / legacy.name)
    with pytest.warns(FutureWarning, match="old data keys .* write the new keys instead"):
        old = printed(legacy)
    assert old == today
    assert set(yaml.safe_load(legacy.read_text())["data"]) - set(today["data"]), "not an old spelling"


def closed_form_trainable(layers: int, hidden: int, targets: int, ranks: list[int], router_inputs: int,
                          extra: int = 0) -> int:
    """Adapters on square h x h projections: each expert r x h (A) and h x r (B), a bias-free router E x inputs."""
    per_layer = sum(rank * (hidden + hidden) for rank in ranks) + len(ranks) * router_inputs
    return layers * targets * per_layer + extra


def test_the_paper_model_on_the_meta_device_has_the_closed_form_trainable_parameters():
    from rode_lightning.adapters.config import AdapterConfig
    from rode_lightning.cli import parse_fit_arguments
    from rode_lightning.estimate import LLAMA_7B, count_parameters
    from rode_lightning.model.vision import VisionConfig
    from transformers import LlamaConfig

    paper = parse_fit_arguments(["--config", str(CONFIGS / "rode.yaml")]).as_dict()["model"]
    adapter = AdapterConfig(**paper["adapter"])
    vision = VisionConfig(preset=paper["vision"]["preset"])
    llama = LlamaConfig(**LLAMA_7B)
    counts = count_parameters(vision, llama, adapter, train_projector=paper["train_projector"])
    assert adapter.ranks == [2, 4, 8, 16] and adapter.target_modules == ["q_proj", "k_proj"]
    assert counts.trainable == closed_form_trainable(32, 4096, 2, [2, 4, 8, 16], 4096) == 16_777_216
    assert counts.frozen_language == 6_738_415_616  # LLaMA-7B as published
    assert vision.num_patches == 576 and counts.frozen_vision > 300_000_000  # ViT-L/14
    lora = count_parameters(vision, llama, AdapterConfig(method="lora", ranks=[32], target_modules=["q_proj",
                                                                                                    "k_proj"]), False)
    assert lora.trainable == 32 * 2 * 32 * (4096 + 4096)
    mocle = AdapterConfig(method="cluster", ranks=[8, 8, 8, 8], num_clusters=8, target_modules=["q_proj", "k_proj"])
    counts = count_parameters(vision, llama, mocle, train_projector=True)
    projector = 1024 * 4096 + 4096 + 4096 * 4096 + 4096
    # four experts plus the universal expert (rank 8), a gate over the 64-wide cluster embedding, the embedding
    expected = 32 * 2 * (5 * 8 * (4096 + 4096) + 4 * 64) + 8 * 64 + projector
    assert counts.trainable == expected


def test_memory_estimate_prints_every_compared_adapter_and_checkpointing_saves_activations(tmp_path, capsys):
    import json

    from rode_lightning.estimate import COMPARED, main as estimate

    report = estimate(["--config", str(CONFIGS / "rode.yaml")])
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last_line) == json.loads(json.dumps(report))
    assert set(report) == {"this config", *COMPARED}
    assert report["rode [2,4,8,16]"]["trainable_parameters"] < report["rode [8,8,8,8]"]["trainable_parameters"]
    no_checkpointing = tmp_path / "off.yaml"
    no_checkpointing.write_text("model:\n  gradient_checkpointing: false\n")
    without = estimate(["--config", str(CONFIGS / "rode.yaml"), "--config", str(no_checkpointing)])
    assert without["this config"]["memory_gib"]["activations"] > 5 * report["this config"]["memory_gib"][
        "activations"]
    # 6.74e9 language weights in bf16 (12.55 GiB) + 0.30e9 vision weights in bf16 (0.57 GiB) + 0.02e9 projector
    # weights in fp32 (0.08 GiB)
    assert 13.0 < report["this config"]["memory_gib"]["frozen_weights"] < 13.4
    fp32_tower = tmp_path / "fp32_tower.yaml"
    fp32_tower.write_text("model:\n  vision:\n    dtype: fp32\n")
    fp32 = estimate(["--config", str(CONFIGS / "rode.yaml"), "--config", str(fp32_tower)])
    tower_bf16_gib = fp32["this config"]["memory_gib"]["frozen_weights"] - report["this config"]["memory_gib"][
        "frozen_weights"]
    assert tower_bf16_gib == pytest.approx(303_966_208 * 2 / 2**30, rel=0.01)  # ViT-L/14-336 tower, 2 bytes saved each


def test_the_estimate_parses_a_config_with_old_data_keys():
    """``python -m rode_lightning.estimate`` parses with the command line's parser, old keys rewritten alike."""
    from rode_lightning.cli import parse_fit_arguments

    with pytest.warns(FutureWarning, match="old data keys"):
        data = parse_fit_arguments(["--config", str(LEGACY / "rode.yaml")]).as_dict()["data"]
    assert [(source["dataset"], source["root"]) for source in data["sources"]] == [
        ("unifood", "/path/to/unifood"), ("nutrition5k", "/path/to/nutrition5k")]
    assert data["tasks"]["eval"] == ["ingredients", "recipe", "nutrition"]
