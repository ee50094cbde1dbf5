"""The demo base: built deterministically, loaded by the loaders real weights go through, free of the fine-tuning
tasks' formats and of the evaluation splits' pictures, and fine-tuned by the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from rode_lightning.conventions import TASKS
from rode_lightning.data.datasets.unifood.demo import DEFAULT_SPLITS, generate_demo_unifood
from rode_lightning.data.dishes import directory_digest
from rode_lightning.data.datasets.nutrition5k.demo import generate_demo_nutrition5k
from rode_lightning.data.demo_text import caption, food_text
from rode_lightning.data.errors import SkipCounter
from rode_lightning.data.datasets.nutrition5k.reader import read_nutrition5k_split
from rode_lightning.data.prompts import QUESTIONS, answer_for
from rode_lightning.data.tokenizer import load_tokenizer
from rode_lightning.data.datasets.unifood.reader import read_unifood_split
from rode_lightning.model.language import LanguageConfig, load_language_model
from rode_lightning.model.projector import MLPProjector
from rode_lightning.model.vision import VisionEncoder
from rode_lightning.model.llava_weights import inspect_llava_directory
from rode_lightning.pretrain import BaseRecipe, build_demo_base
from rode_lightning.pretrain import build as build_module
from rode_lightning.pretrain.build import TEXT_STREAM, vision_config
from rode_lightning.pretrain.clip import build_clip
from rode_lightning.pretrain.leakage import check_texts, task_format_leaks
from rode_lightning.pretrain.plates import draw_plates, image_digest
from tests.pretrain.conftest import TINY


def test_build_is_deterministic_for_a_seed_and_skipped_when_present(tiny_base, tmp_path):
    again = build_demo_base(tmp_path / "base", TINY)
    for relative in ("open_clip_model.safetensors", "llava-v1.5-demo"):
        first, second = tiny_base.root / relative, again.root / relative
        if first.is_dir():
            assert directory_digest(first) == directory_digest(second)
        else:
            assert first.read_bytes() == second.read_bytes()
    before = again.record.stat().st_mtime_ns
    assert build_demo_base(tmp_path / "base", TINY).record.stat().st_mtime_ns == before  # cached, not rebuilt
    other_seed = build_demo_base(tmp_path / "other", BaseRecipe(seed=1).scaled(0.02))
    assert other_seed.vision_checkpoint.read_bytes() != tiny_base.vision_checkpoint.read_bytes()
    record = json.loads(tiny_base.record.read_text())
    assert record["recipe"] == TINY.as_dict() and "torch" in record["versions"]
    assert set(record["final_losses"]) == {"clip_contrastive", "language_model", "alignment_caption"}


def test_base_loads_through_the_loaders_of_real_weights(tiny_base):
    """The open_clip checkpoint holds a whole CLIP; our tower (model.vision.checkpoint) gives its penultimate block.
    The LLaVA directory is detected as the original v1.5 layout and its tensors land where they were saved."""
    clip = build_clip(TINY)
    clip.load_state_dict(load_file(str(tiny_base.vision_checkpoint)))  # strict: every tensor of a CLIP
    tower = VisionEncoder(vision_config(TINY, str(tiny_base.vision_checkpoint)))
    images = torch.randn(2, 3, TINY.vision_image_size, TINY.vision_image_size)
    expected = clip.visual.forward_intermediates(images, indices=[TINY.vision_layers - 2], intermediates_only=True,
                                                 output_fmt="NLC")["image_intermediates"][0]
    torch.testing.assert_close(tower(images), expected)

    directory = inspect_llava_directory(tiny_base.llava)
    assert directory.layout == "llava" and directory.projector_input_dim == TINY.vision_width
    tokenizer = load_tokenizer(str(tiny_base.llava))
    demo = load_tokenizer("demo")
    text = "mass: 348 g, energy: 440 kcal. 1. Cook the rice."
    assert tokenizer(text)["input_ids"] == demo(text)["input_ids"]
    model, projector_weights = load_language_model(LanguageConfig(path=str(tiny_base.llava)), len(tokenizer),
                                                   TINY.vision_width)
    saved = load_file(str(tiny_base.llava / "model.safetensors"))
    torch.testing.assert_close(model.model.layers[1].mlp.down_proj.weight, saved["model.layers.1.mlp.down_proj.weight"])
    projector = MLPProjector(TINY.vision_width, TINY.hidden_size)
    projector_weights.load_into(projector)
    torch.testing.assert_close(projector.layers[2].bias, saved["model.mm_projector.2.bias"])


def test_the_demo_tokenizer_splits_numbers_into_digits_like_llama():
    tokenizer = load_tokenizer("demo")
    pieces = tokenizer.convert_ids_to_tokens(tokenizer("energy: 440 kcal", add_special_tokens=False)["input_ids"])
    assert [piece for piece in pieces if any(c.isdigit() for c in piece)] == ["4", "4", "0"]


def test_pretraining_texts_hold_no_task_question_or_answer_format():
    recipe = BaseRecipe()
    texts = food_text(np.random.default_rng([recipe.seed, TEXT_STREAM]), recipe.texts)
    check_texts(texts, "pre-training text")  # raises on the first leak
    rng = np.random.default_rng(3)
    from rode_lightning.data.dishes import sample_dish
    check_texts([caption(sample_dish(rng)[1]) for _ in range(500)], "caption")


def test_the_leakage_check_finds_every_task_format(demo_root):
    record = read_unifood_split(demo_root, "train", "raise", SkipCounter())[0]
    for task in ("category", "recipe", "nutrition"):
        assert task_format_leaks(answer_for(record, task)), task
    for phrasings in QUESTIONS.values():
        for question in phrasings:
            assert task_format_leaks(f"Someone asked: {question}")
    assert task_format_leaks("USER: hello ASSISTANT: hi")
    assert not task_format_leaks("A salad is usually made with lettuce, tomato and cucumber.")
    with pytest.raises(ValueError, match="caption 1 looks like fine-tuning data"):
        check_texts(["a plate with rice.", "mass: 300 g"], "caption")
    assert set(TASKS) == {"category", "ingredients", "recipe", "nutrition"}  # ingredient lists are captions' content


def test_no_pretraining_picture_is_a_validation_or_test_picture(tmp_path):
    """The full recipe's plates against every held-out picture of the demo datasets, pixel for pixel."""
    recipe = BaseRecipe()
    plates = draw_plates(recipe.plates, recipe.seed, recipe.image_size, recipe.vision_image_size)
    assert len(set(plates.digests)) == recipe.plates
    unifood = generate_demo_unifood(tmp_path / "unifood", splits=DEFAULT_SPLITS, image_size=recipe.image_size)
    nutrition5k = generate_demo_nutrition5k(tmp_path / "nutrition5k", sizes={"train": 128, "test": 32},
                                            image_size=recipe.image_size)
    held_out = []
    for split in ("val", "test"):
        held_out += read_unifood_split(unifood, split, "raise", SkipCounter())
        held_out += read_nutrition5k_split(nutrition5k, split, "skip", SkipCounter())
    assert len(held_out) > 150
    digests = {image_digest(Image.open(record.image)) for record in held_out}
    assert digests.isdisjoint(plates.digests)


def test_an_interrupted_build_leaves_no_base(tmp_path, monkeypatch):
    def crash(base, recipe):
        (base.root / "open_clip_model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(build_module, "_build", crash)
    with pytest.raises(KeyboardInterrupt):
        build_demo_base(tmp_path / "base", TINY)
    assert not (tmp_path / "base").exists() and not (tmp_path / "base.partial").exists()


def test_cli_resolves_demo_base_to_the_built_files(tmp_path, monkeypatch, tiny_base):
    from rode_lightning import cli

    calls = []

    def fake_build(root):
        calls.append(Path(root))
        return type(tiny_base)(tiny_base.root)

    import rode_lightning.pretrain as pretrain

    monkeypatch.setattr(pretrain, "build_demo_base", fake_build)
    config = {"model.vision.checkpoint": "demo-base", "model.language.path": "demo-base",
              "model.tokenizer": "demo-base", "data.tokenizer": "demo-base", "data.demo_dir": str(tmp_path)}
    cli.resolve_demo_base(config)
    assert calls == [tmp_path / "base"]
    assert config["model.vision.checkpoint"] == str(tiny_base.vision_checkpoint)
    assert config["model.language.path"] == config["model.tokenizer"] == str(tiny_base.llava)
    assert config["data.tokenizer"] == "demo-base"  # no longer used (the model's format tokenizes): left as written


def test_fit_a_few_steps_on_the_built_base_then_test_it(tiny_base, cli_demo_dir, tmp_path):
    """configs/demo.yaml over a built base, given by its paths as a user gives LLaVA-7B's."""
    from rode_lightning.cli import main
    from tests.conftest import tiny_cli_args

    paths = ["--model.vision.checkpoint", str(tiny_base.vision_checkpoint), "--model.language.path",
             str(tiny_base.llava), "--model.tokenizer", str(tiny_base.llava)]
    cli = main(["fit", *tiny_cli_args(cli_demo_dir, tmp_path / "logs", "--trainer.limit_train_batches", "3",
                                      "--trainer.max_epochs", "1", *paths)])
    assert cli.trainer.global_step == 3
    saved = load_file(str(tiny_base.llava / "model.safetensors"))
    language_model = cli.model.model.language_model
    torch.testing.assert_close(language_model.model.embed_tokens.weight, saved["model.embed_tokens.weight"])
    clip = load_file(str(tiny_base.vision_checkpoint))
    torch.testing.assert_close(cli.model.model.vision.tower.conv1.weight, clip["visual.conv1.weight"])
    results = json.loads((Path(cli.trainer.log_dir) / "results" / "val_results.json").read_text())
    assert set(results["results"]) == {"unifood", "nutrition5k"}
    assert set(results["floors"]["unifood"]) == {"ingredient_iou_most_frequent", "pmae_average_train_mean"}
    assert results["provenance"]["versions"]["transformers"]


def test_building_the_base_leaves_the_callers_random_state_alone(tmp_path):
    """A run seeded before the base is built on first use must draw what it draws when the base was cached."""
    import random

    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(7)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(7)
    build_demo_base(tmp_path / "base", TINY)
    assert (tmp_path / "base" / "build.json").is_file()
    drawn = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(drawn[0], expected[0]) and drawn[1:] == expected[1:]
