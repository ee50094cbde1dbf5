"""The converter to Uni-Food: every layout's demo copy round-trips through ``annotations/<split>.jsonl`` into the same
records, with the same pixels, and the CLI reports mistakes in one line."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from rode_lightning.data.convert import convert, main, served_dataset
from rode_lightning.data.datasets import DATASETS
from rode_lightning.data.datasets.unifood.demo import generate_demo_unifood
from rode_lightning.data.datasets.food101.demo import generate_demo_food101
from rode_lightning.data.datasets.huggingface.demo import demo_source, generate_demo_huggingface
from rode_lightning.data.datasets.nutrition5k.demo import generate_demo_nutrition5k
from rode_lightning.data.datasets.recipe1m.demo import generate_demo_recipe1m
from rode_lightning.data.datasets.vireo172.demo import generate_demo_vireo172
from rode_lightning.data.datasets.food101.reader import read_food101_split
from rode_lightning.data.datasets.huggingface.reader import read_huggingface_split
from rode_lightning.data.images import open_image
from rode_lightning.data.datasets.nutrition5k.reader import read_nutrition5k_split
from rode_lightning.data.datasets.recipe1m.reader import read_recipe1m_split
from rode_lightning.data.records import FoodRecord
from rode_lightning.data.datasets.unifood.reader import read_unifood_split
from rode_lightning.data.datasets.vireo172.reader import read_vireo172_split

SPLITS = ("train", "val", "test")

# The demo copies, small; each generator's split names and the reader that serves the layout (with convert's
# defaults: val_fraction 0.1, Recipe1M's own min_ingredient_count).
LAYOUTS = {
    "unifood": (lambda root: generate_demo_unifood(root, splits={"train": 12, "val": 4, "test": 4}, image_size=32),
                lambda root, split: read_unifood_split(root, split, val_fraction=0.1)),
    "nutrition5k": (lambda root: generate_demo_nutrition5k(root, sizes={"train": 32, "test": 8}, image_size=32),
                    read_nutrition5k_split),
    "recipe1m": (lambda root: generate_demo_recipe1m(root, sizes={"train": 24, "val": 6, "test": 6}, image_size=32),
                 read_recipe1m_split),
    "food101": (lambda root: generate_demo_food101(root, sizes={"train": 16, "test": 4}, image_size=32),
                read_food101_split),
    "vireo172": (lambda root: generate_demo_vireo172(root, sizes={"train": 12, "val": 4, "test": 4}, image_size=32),
                 read_vireo172_split),
}
HF_SIZES = {"train": 12, "validation": 4, "test": 4}


pytestmark = pytest.mark.usefixtures("fresh_datasets")


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    base = tmp_path_factory.mktemp("convert_demos")
    return {name: generate(base / name) for name, (generate, _) in LAYOUTS.items()}


@pytest.fixture(scope="module")
def demo_hf(tmp_path_factory):
    return generate_demo_huggingface(tmp_path_factory.mktemp("convert_hf"), sizes=HF_SIZES, image_size=32)


def pixels(image) -> np.ndarray:
    with open_image(image) as opened:
        return np.asarray(opened.convert("RGB"))


def assert_same_records(converted: list[FoodRecord], source: list[FoodRecord], out: Path, split: str,
                        link: bool = False) -> None:
    assert [r.id for r in converted] == [r.id for r in source]
    for index, (back, original) in enumerate(zip(converted, source)):
        assert back.dataset == "unifood"
        assert back.category == original.category
        assert back.ingredient_names == original.ingredient_names
        assert [i.grams for i in back.ingredients] == [i.grams for i in original.ingredients]
        assert back.ingredients == original.ingredients
        assert back.recipe == original.recipe
        assert back.nutrition == original.nutrition
        assert back.conversations == original.conversations
        image = Path(back.image)
        assert image.parent == out / "images" / split and image.stem == f"{index:06d}"
        if isinstance(original.image, str):
            assert image.suffix == Path(original.image).suffix.lower()
            assert image.is_symlink() == link
            if link:
                assert Path(os.readlink(image)) == Path(original.image).absolute()
            assert image.read_bytes() == Path(original.image).read_bytes()
        else:
            assert image.suffix == ".png" and not image.is_symlink()
            with Image.open(image) as written:
                assert written.format == "PNG"
        assert np.array_equal(pixels(back.image), pixels(original.image))


# ---------------------------------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_every_layout_round_trips_into_the_same_records(demos, tmp_path, name, capsys):
    root, read = demos[name], LAYOUTS[name][1]
    out = tmp_path / "out"
    written = convert(served_dataset(name, str(root), None), out)
    assert list(written) == list(SPLITS)  # every layout has (or carves) all three
    assert sorted(p.name for p in (out / "annotations").iterdir()) == ["test.jsonl", "train.jsonl", "val.jsonl"]
    for split in SPLITS:
        source = read(root, split)
        assert written[split] == len(source) > 0
        converted = read_unifood_split(out, split)
        assert_same_records(converted, source, out, split)
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(SPLITS)
    assert not list((out / "annotations").glob(".*partial"))


def test_recipe1m_round_trip_keeps_carbohydrate_absent(demos, tmp_path):
    out = tmp_path / "out"
    convert(served_dataset("recipe1m", str(demos["recipe1m"]), None), out)
    with_nutrition = [r for split in SPLITS for r in read_unifood_split(out, split) if r.nutrition]
    assert with_nutrition
    assert all(set(r.nutrition) == {"mass_g", "energy_kcal", "fat_g", "protein_g"} for r in with_nutrition)
    assert "carbohydrate" not in (out / "annotations" / "train.jsonl").read_text()


def test_carved_val_of_a_layout_without_one_stays_the_same_dishes(demos, tmp_path):
    out = tmp_path / "out"
    written = convert(served_dataset("food101", str(demos["food101"]), None, 0.3), out)
    train = [r.id for r in read_food101_split(demos["food101"], "train", val_fraction=0.3)]
    val = [r.id for r in read_food101_split(demos["food101"], "val", val_fraction=0.3)]
    assert written == {"train": len(train), "val": len(val), "test": 4}
    assert len(train) + len(val) == 16 and val
    assert [r.id for r in read_unifood_split(out, "train")] == train
    assert [r.id for r in read_unifood_split(out, "val")] == val


def test_huggingface_demo_round_trips_with_its_conversations(demo_hf, tmp_path):
    source = demo_source(demo_hf)
    out = tmp_path / "out"
    written = convert(served_dataset("huggingface", None, str(write_config(tmp_path, source))), out)
    assert written == {"train": 12, "val": 4, "test": 4}
    for split in SPLITS:
        original = read_huggingface_split(source, split)
        converted = read_unifood_split(out, split)
        assert_same_records(converted, original, out, split)
        assert all(set(r.conversations) == {"recipe"} for r in converted)
        assert all(r.conversations["recipe"][1].startswith("1. ") for r in converted)


def test_huggingface_without_validation_writes_its_carved_val(tmp_path):
    root = generate_demo_huggingface(tmp_path / "hf", sizes={"train": 20, "test": 4}, image_size=32)
    source = demo_source(root)
    out = tmp_path / "out"
    written = convert(served_dataset("huggingface", None, str(write_config(tmp_path, source)), 0.25), out)
    val = read_huggingface_split(source, "val", val_fraction=0.25)
    train = read_huggingface_split(source, "train", val_fraction=0.25)
    assert written == {"train": len(train), "val": len(val), "test": 4} and len(train) + len(val) == 20 and val
    assert_same_records(read_unifood_split(out, "val"), val, out, "val")
    assert_same_records(read_unifood_split(out, "train"), train, out, "train")


@pytest.mark.parametrize("name", ["food101", "nutrition5k", "unifood"])
def test_link_writes_symbolic_links_to_the_source_images(demos, tmp_path, name, capsys):
    root, read = demos[name], LAYOUTS[name][1]
    out = tmp_path / "out"
    assert main(["--from", name, "--root", str(root), "--to", str(out), "--link"]) == 0
    for split in SPLITS:
        assert_same_records(read_unifood_split(out, split), read(root, split), out, split, link=True)


def test_converting_again_replaces_links_with_copies(demos, tmp_path, capsys):
    root, out = demos["vireo172"], tmp_path / "out"
    assert main(["--from", "vireo172", "--root", str(root), "--to", str(out), "--link"]) == 0
    assert main(["--from", "vireo172", "--root", str(root), "--to", str(out)]) == 0
    for split in SPLITS:
        assert_same_records(read_unifood_split(out, split), read_vireo172_split(root, split), out, split)


def test_link_with_relative_paths_points_at_absolute_sources(demos, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(demos["unifood"].parent)
    out = tmp_path / "out"
    assert main(["--from", "unifood", "--root", "unifood", "--to", str(out), "--link"]) == 0
    link = out / "images" / "train" / "000000.png"
    assert os.readlink(link) == str(demos["unifood"] / "images" / "train_00000.png")
    assert read_unifood_split(out, "train")[0].id == "demo-train-00000"


# ---------------------------------------------------------------------------------------------------------------------
# The CLI


def write_config(folder: Path, source) -> Path:
    path = folder / "block.yaml"
    path.write_text(yaml.safe_dump(asdict(source)))
    return path


def test_cli_returns_0_and_prints_the_counts(demos, tmp_path, capsys):
    out = tmp_path / "food101_unifood"
    assert main(["--from", "food101", "--root", str(demos["food101"]), "--to", str(out)]) == 0
    captured = capsys.readouterr()
    counts = {split: len(read_food101_split(demos["food101"], split)) for split in SPLITS}
    assert captured.out == (f"wrote food101 as Uni-Food to {out}: train {counts['train']}, val {counts['val']}, "
                            f"test {counts['test']} records\n")
    assert counts["train"] + counts["val"] == 16 and counts["test"] == 4


def test_cli_converts_a_huggingface_block_from_a_yaml_config(demo_hf, tmp_path, capsys):
    config = write_config(tmp_path, demo_source(demo_hf))
    block = yaml.safe_load(config.read_text())
    assert block["path"] == str(demo_hf) and block["name"] == "demo_huggingface"
    assert block["conversations"] == {"recipe": {"question": "question", "answer": "answer"}}
    out = tmp_path / "out"
    assert main(["--from", "huggingface", "--config", str(config), "--to", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote demo_huggingface as Uni-Food to {out}: train 12, val 4, test 4 records\n"
    for split in SPLITS:
        assert_same_records(read_unifood_split(out, split), read_huggingface_split(demo_source(demo_hf), split), out,
                            split)


def test_cli_reports_a_bad_mapping_in_the_config_naming_the_key(demo_hf, tmp_path, capsys):
    block = {**asdict(demo_source(demo_hf)), "category": "dish_name"}
    config = tmp_path / "block.yaml"
    config.write_text(yaml.safe_dump(block))
    assert main(["--from", "huggingface", "--config", str(config), "--to", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: {config}.options.category: column 'dish_name' is not in ")
    assert captured.err.count("\n") == 1 and captured.out == ""
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    (["--from", "pizza", "--root", "x"],
     "error: --from 'pizza': expected one of " + ", ".join(DATASETS)),
    (["--from", "food101"], "error: --from food101 needs --root: the Food-101 folder"),
    (["--from", "vireo172"], "error: --from vireo172 needs --root: the VIREO Food-172 folder"),
    (["--from", "huggingface"],
     "error: --from huggingface needs --config: a YAML file with the source's keys (dataset, root, options with "
     "the column mapping; README.md)"),
    (["--from", "huggingface", "--config", "{tmp}/missing.yaml"], "error: --config {tmp}/missing.yaml does not exist"),
    (["--from", "food101", "--root", "{tmp}/nowhere"],
     "error: Food-101 root {tmp}/nowhere does not exist or is not a directory"),
    (["--from", "unifood", "--root", "{tmp}/nowhere"],
     "error: Uni-Food root {tmp}/nowhere does not exist or is not a directory (expected annotations/train.jsonl and "
     "the images it names)"),
])
def test_cli_mistakes_return_2_with_one_line(tmp_path, capsys, argv, message):
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    assert main([*argv, "--to", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert captured.err == message.format(tmp=tmp_path) + "\n"
    assert captured.out == "" and "Traceback" not in captured.err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, message", [
    ("- path: x\n", "expected the keys of one data.sources entry"),
    ("path: x\ncolour: red\n", "{config}.options: ['colour'] - Hugging Face dataset takes ['category',"),
])
def test_cli_refuses_a_config_that_is_not_one_block(tmp_path, capsys, text, message):
    config = tmp_path / "block.yaml"
    config.write_text(text)
    assert main(["--from", "huggingface", "--config", str(config), "--to", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message.format(config=config) in error and error.count("\n") == 1


def test_cli_without_to_is_an_argparse_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--from", "food101", "--root", "x"])
    assert exit_.value.code == 2
    assert "the following arguments are required: --to" in capsys.readouterr().err


def test_cli_reports_a_malformed_yaml_config_in_one_line(tmp_path, capsys):
    config = tmp_path / "block.yaml"
    config.write_text("path: [unclosed\n")
    assert main(["--from", "huggingface", "--config", str(config), "--to", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_refuses_a_source_without_a_train_split(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["--from", "unifood", "--root", str(tmp_path / "empty"), "--to", str(tmp_path / "out")]) == 2
