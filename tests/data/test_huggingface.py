"""Local Hugging Face datasets: the column mapping and its checks, parquet and ``save_to_disk`` layouts, images kept
in the dataset, each column's row checks, the demo copy. What every reader does with bad input (skipping and
counting, unreadable images, empty splits, held-out val) is the reader contract's, ``test_reader_contract.py``."""

import hashlib
import io
import json
import logging
import math
import pickle
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, List, Value, load_from_disk
from PIL import Image as PILImage

from rode_lightning.data.dishes import CATEGORIES, draw_dish, recipe_of, sample_dish
from rode_lightning.data.datasets.huggingface.demo import DEMO_SOURCE, demo_source, generate_demo_huggingface
from rode_lightning.data.errors import DataFormatError, SkipCounter
from rode_lightning.data.errors import MissingSplitError
from rode_lightning.data.datasets.huggingface.reader import (DatasetImage, HuggingFaceSource, check_huggingface_source,
                                             read_huggingface_split)
from rode_lightning.data.datasets.huggingface.files import clear_dataset_cache
from rode_lightning.data.images import check_image, open_image
from rode_lightning.data.records import FoodRecord, Ingredient
from rode_lightning.data.splits import is_held_out

KEY = "data.huggingface[0]"
ALL_TRAIN = 1e-9  # a hold-out share too small to take any row of these tests: a train split is all train
DEMO_COLUMNS = "image, dish, ingredients, grams, kcal, fat, carbs, protein, question, answer"
EXPECTED_PATH = ("a folder written by save_to_disk, a folder of parquet files, a parquet file or a glob of parquet "
                 "files")


pytestmark = pytest.mark.usefixtures("fresh_datasets")


def png_bytes(colour=(200, 30, 30), size=8) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def noisy_png_bytes() -> bytes:
    """A PNG whose pixel data is long enough that cutting it leaves the image data incomplete."""
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------------------------
# The demo


@pytest.fixture(scope="module")
def demo_hf(tmp_path_factory):
    return generate_demo_huggingface(tmp_path_factory.mktemp("demo_hf"), seed=0,
                                     sizes={"train": 12, "validation": 4, "test": 4}, image_size=32)


def test_demo_reads_back_every_split_with_its_mapping(demo_hf):
    source = demo_source(demo_hf)
    saved = load_from_disk(str(demo_hf))
    for split, dataset_split, count in [("train", "train", 12), ("val", "validation", 4), ("test", "test", 4)]:
        records = read_huggingface_split(source, split)
        rows = saved[dataset_split]
        assert [r.id for r in records] == [f"{dataset_split}/{row}" for row in range(count)]
        assert {r.dataset for r in records} == {"demo_huggingface"}
        # ClassLabel integers are read as their names.
        assert [r.category for r in records] == rows.features["dish"].int2str(list(rows["dish"]))
        assert {r.category for r in records} <= set(CATEGORIES)
        assert [r.ingredient_names for r in records] == list(rows["ingredients"])
        assert {i.grams for r in records for i in r.ingredients} == {0.0}  # the dataset gives no grams
        assert [r.nutrition for r in records] == [
            {"mass_g": g, "energy_kcal": k, "fat_g": f, "carbohydrate_g": c, "protein_g": p}
            for g, k, f, c, p in zip(rows["grams"], rows["kcal"], rows["fat"], rows["carbs"], rows["protein"])]
        assert [r.conversations for r in records] == [{"recipe": (q, a)} for q, a in zip(rows["question"],
                                                                                          rows["answer"])]
        assert {r.recipe for r in records} == {()}  # the recipe task comes from the conversation columns


def test_demo_first_plate_is_exactly_what_was_drawn(demo_hf):
    rng = np.random.default_rng(0)
    category, ingredients = sample_dish(rng)
    drawn = draw_dish(ingredients, rng, 32)
    record = read_huggingface_split(demo_source(demo_hf), "train")[0]
    assert record.category == category
    assert record.ingredient_names == [item["name"] for item in ingredients]
    assert record.conversations["recipe"][1] == " ".join(
        f"{number}. {step}" for number, step in enumerate(recipe_of(category, ingredients), start=1))
    assert record.image == DatasetImage(str(demo_hf), "train", 0, "image")
    assert str(record.image) == f"{demo_hf} split 'train' row 0 column 'image'"
    with open_image(record.image) as image:
        assert image.size == (32, 32) and image.mode == "RGB"
        assert image.tobytes() == drawn.tobytes()


def test_demo_images_all_open_at_the_drawn_size(demo_hf):
    for split in ("train", "val", "test"):
        for record in read_huggingface_split(demo_source(demo_hf), split):
            assert isinstance(record.image, DatasetImage)
            assert record.image.open().size == (32, 32)


def test_records_hold_no_image_data_and_open_after_the_cache_is_cleared(demo_hf):
    records = read_huggingface_split(demo_source(demo_hf), "test")
    expected = [record.image.open().tobytes() for record in records]
    data = pickle.dumps(records)
    assert b"\x89PNG" not in data and len(data) < 3072  # references, not even one decoded 32 x 32 RGB image
    clear_dataset_cache()
    assert [record.image.open().tobytes() for record in pickle.loads(data)] == expected


def test_records_unpickled_in_a_fresh_process_open_their_images(demo_hf):
    records = read_huggingface_split(demo_source(demo_hf), "val")
    code = ("import hashlib, pickle, sys\n"
            "from rode_lightning.data.images import open_image\n"
            "for record in pickle.load(sys.stdin.buffer):\n"
            "    with open_image(record.image) as image:\n"
            "        print(record.id, image.size, hashlib.sha256(image.tobytes()).hexdigest())\n")
    result = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(records), capture_output=True,
                            check=True)
    assert result.stdout.decode().splitlines() == [
        f"{r.id} (32, 32) {hashlib.sha256(r.image.open().tobytes()).hexdigest()}" for r in records]


def test_demo_is_deterministic_and_idempotent(tmp_path):
    def contents(root):
        saved = load_from_disk(str(root))
        return {split: saved[split].to_dict() for split in saved}

    sizes = {"train": 3, "test": 2}
    first = generate_demo_huggingface(tmp_path / "a", seed=3, sizes=sizes, image_size=16)
    second = generate_demo_huggingface(tmp_path / "b", seed=3, sizes=sizes, image_size=16)
    other = generate_demo_huggingface(tmp_path / "c", seed=4, sizes=sizes, image_size=16)
    assert contents(first) == contents(second) != contents(other)
    assert json.loads((first / ".demo_huggingface").read_text()) == {"seed": 3, "sizes": sizes, "image_size": 16,
                                                                     "version": 1}
    index = first / "dataset_dict.json"
    before = index.stat().st_mtime_ns
    generate_demo_huggingface(first, seed=3, sizes=sizes, image_size=16)
    assert index.stat().st_mtime_ns == before
    # Other arguments replace the previous demo instead of mixing with it.
    generate_demo_huggingface(first, seed=3, sizes={"validation": 1}, image_size=16)
    assert sorted(p.name for p in first.iterdir()) == [".demo_huggingface", "dataset_dict.json", "validation"]
    assert {split: len(rows["dish"]) for split, rows in contents(first).items()} == {"validation": 1}


def test_demo_refuses_to_overwrite_a_dataset_it_did_not_write(tmp_path):
    DatasetDict({"train": Dataset.from_dict({"x": [1]})}).save_to_disk(str(tmp_path))
    with pytest.raises(FileExistsError, match="holds \\['dataset_dict.json'\\] but no .demo_huggingface marker"):
        generate_demo_huggingface(tmp_path, sizes={"train": 1})
    assert load_from_disk(str(tmp_path))["train"]["x"] == [1]


def test_demo_source_is_the_mapping_with_a_path():
    assert DEMO_SOURCE.path == ""
    assert demo_source("/data/demo") == replace(DEMO_SOURCE, path="/data/demo")
    assert DEMO_SOURCE.conversations == {"recipe": {"question": "question", "answer": "answer"}}


# ---------------------------------------------------------------------------------------------------------------------
# Parquet, with a column of image paths


def write_parquet_dataset(root):
    """train.parquet and test.parquet beside images/; one image path is absolute and lies elsewhere."""
    (root / "images").mkdir(parents=True)
    (root / "elsewhere").mkdir()
    for name, colour in [("a", (200, 30, 30)), ("b", (30, 200, 30)), ("c", (30, 30, 200))]:
        (root / "images" / f"{name}.png").write_bytes(png_bytes(colour))
    (root / "elsewhere" / "d.png").write_bytes(png_bytes((9, 9, 9)))
    train = Dataset.from_dict({
        "file": ["images/a.png", str(root / "elsewhere" / "d.png")],
        "name": ["dish-a", "dish-d"],
        "kind": ["pizza", "salad"],
        "contents": ["Tomatoes, tomato, cheese", "lettuce,, cucumber "],
        "method": ["Bake it.\n\nSlice it.\n", "Toss it."],
        "kcal": [800.5, 90.0],
        "protein": [30, 2],
    })
    test = Dataset.from_dict({"file": ["images/b.png"], "name": ["dish-b"], "kind": ["soup"],
                              "contents": ["leek"], "method": ["Simmer."], "kcal": [120.0], "protein": [4]})
    train.to_parquet(str(root / "train.parquet"))
    test.to_parquet(str(root / "test.parquet"))
    return root


def parquet_source(path, **overrides):
    return HuggingFaceSource(path=str(path), name="pq", image="file", id="name", category="kind",
                             ingredients="contents", recipe="method",
                             nutrition={"protein_g": "protein", "energy_kcal": "kcal"}, **overrides)


def test_parquet_folder_with_image_paths(tmp_path):
    root = write_parquet_dataset(tmp_path)
    train = read_huggingface_split(parquet_source(root), "train", val_fraction=ALL_TRAIN)
    assert train == [
        FoodRecord(id="dish-a", image=str(root / "images" / "a.png"), dataset="pq", category="pizza",
                   # A comma-separated column; "Tomatoes" and "tomato" are one ingredient, listed once.
                   ingredients=(Ingredient("Tomatoes", 0.0), Ingredient("cheese", 0.0)),
                   recipe=("Bake it.", "Slice it."),  # one text, one step per line
                   nutrition={"energy_kcal": 800.5, "protein_g": 30.0}),
        FoodRecord(id="dish-d", image=str(root / "elsewhere" / "d.png"), dataset="pq", category="salad",
                   ingredients=(Ingredient("lettuce", 0.0), Ingredient("cucumber", 0.0)), recipe=("Toss it.",),
                   nutrition={"energy_kcal": 90.0, "protein_g": 2.0}),
    ]
    assert list(train[0].nutrition) == ["energy_kcal", "protein_g"]  # the fields given, in the fixed order
    test = read_huggingface_split(parquet_source(root), "test")
    assert [(r.id, r.image) for r in test] == [("dish-b", str(root / "images" / "b.png"))]
    with open_image(test[0].image) as image:
        assert image.getpixel((0, 0)) == (30, 200, 30)


@pytest.mark.parametrize("path", ["train.parquet", "*.parquet", "t*.parquet"])
def test_parquet_file_or_glob(tmp_path, path):
    root = write_parquet_dataset(tmp_path)
    source = parquet_source(root / path)
    assert [r.id for r in read_huggingface_split(source, "train", val_fraction=ALL_TRAIN)] == ["dish-a", "dish-d"]
    if path == "train.parquet":
        with pytest.raises(MissingSplitError) as error:
            read_huggingface_split(source, "test")
        assert str(error.value) == (f"{root / 'train.parquet'} has no test split (splits: train): add one named "
                                    f"'test', or set data.huggingface.splits.test to the split that holds it")
    else:
        assert [r.id for r in read_huggingface_split(source, "test")] == ["dish-b"]


def test_parquet_shards_in_hub_layout_with_an_image_feature(tmp_path):
    features = Features({"image": Image(), "label": Value("string")})
    colours = [(10, 20, 30), (40, 50, 60), (70, 80, 90)]
    shards = {"data/train-00000-of-00002.parquet": [0, 1], "data/train-00001-of-00002.parquet": [2],
              "data/validation-00000-of-00001.parquet": [1], "data/test-00000-of-00001.parquet": [0]}
    for relative, indices in shards.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        Dataset.from_dict({"image": [{"bytes": png_bytes(colours[i]), "path": None} for i in indices],
                           "label": [f"dish {i}" for i in indices]}, features=features).to_parquet(
            str(tmp_path / relative))
    source = HuggingFaceSource(path=str(tmp_path), name="hub", category="label")
    train = read_huggingface_split(source, "train")
    assert [(r.id, r.category) for r in train] == [("train/0", "dish 0"), ("train/1", "dish 1"), ("train/2", "dish 2")]
    assert train[2].image.files == (str(tmp_path / "data/train-00000-of-00002.parquet"),
                                    str(tmp_path / "data/train-00001-of-00002.parquet"))
    assert [r.category for r in read_huggingface_split(source, "val")] == ["dish 1"]
    clear_dataset_cache()
    assert [pickle.loads(pickle.dumps(r.image)).open().getpixel((0, 0)) for r in train] == colours


def test_parquet_files_must_all_name_a_split_or_none(tmp_path):
    write_parquet_dataset(tmp_path)
    Dataset.from_dict({"x": [1]}).to_parquet(str(tmp_path / "extra.parquet"))
    with pytest.raises(ValueError) as error:
        check_huggingface_source(parquet_source(tmp_path), KEY)
    assert str(error.value) == (f"{KEY}.path: {tmp_path / 'extra.parquet'} names no split, while other files do "
                                f"(test, train); expected file names starting with one of test, train, val, "
                                f"validation, or no split names at all")


def test_parquet_without_split_names_is_train(tmp_path):
    write_parquet_dataset(tmp_path)
    (tmp_path / "train.parquet").rename(tmp_path / "part-0.parquet")
    (tmp_path / "test.parquet").rename(tmp_path / "part-1.parquet")
    # One unnamed split is our train whatever splits says; val is carved out of it.
    source = parquet_source(tmp_path, splits={"train": "training"})
    assert [r.id for r in read_huggingface_split(source, "train", val_fraction=ALL_TRAIN)] == ["dish-a", "dish-d",
                                                                                         "dish-b"]
    with pytest.raises(MissingSplitError) as error:
        read_huggingface_split(source, "test")
    assert str(error.value) == (f"{tmp_path} has no test split (splits: train): add one named 'test', or set "
                                f"data.huggingface.splits.test to the split that holds it")


# ---------------------------------------------------------------------------------------------------------------------
# Splits


@pytest.fixture(scope="module")
def no_val_demo(tmp_path_factory):
    return generate_demo_huggingface(tmp_path_factory.mktemp("no_val"), seed=1, sizes={"train": 20, "test": 2},
                                     image_size=8)


def test_missing_val_is_carved_out_of_train_by_record_id(no_val_demo, caplog):
    source = demo_source(no_val_demo)
    with caplog.at_level(logging.INFO, logger="rode_lightning.data.datasets.huggingface.reader"):
        train = [r.id for r in read_huggingface_split(source, "train", val_fraction=0.25)]
        val = [r.id for r in read_huggingface_split(source, "val", val_fraction=0.25)]
    # Without an id column a record's id is <split>/<row>, and that is what is hashed.
    assert val == [f"train/{row}" for row in range(20) if is_held_out(f"train/{row}", 0.25)] and 0 < len(val) < 20
    assert train == [f"train/{row}" for row in range(20) if f"train/{row}" not in val]
    assert (f"demo_huggingface ({no_val_demo}) has no validation split: val is the held-out share of its 'train' "
            f"split, held out by a hash of the record id with val_fraction=0.25") in caplog.messages
    assert (f"demo_huggingface ({no_val_demo}) has no validation split: train is the rest of its 'train' split, "
            f"held out by a hash of the record id with val_fraction=0.25") in caplog.messages


def test_carved_val_uses_the_id_column(tmp_path):
    root = write_parquet_dataset(tmp_path)
    # A fraction that holds out exactly one of the two train rows (which one depends on the ids alone).
    fraction = next(f / 100 for f in range(1, 100) if is_held_out("dish-a", f / 100) != is_held_out("dish-d", f / 100))
    held_out = [i for i in ("dish-a", "dish-d") if is_held_out(i, fraction)]
    assert [r.id for r in read_huggingface_split(parquet_source(root), "val", val_fraction=fraction)] == held_out
    assert [r.id for r in read_huggingface_split(parquet_source(root), "train", val_fraction=fraction)] == [
        i for i in ("dish-a", "dish-d") if i not in held_out]


def test_missing_test_split_names_what_to_add(tmp_path, demo_hf):
    source = replace(demo_source(demo_hf), splits={"test": "train"})
    assert [r.id for r in read_huggingface_split(source, "test")][:2] == ["train/0", "train/1"]
    root = generate_demo_huggingface(tmp_path, sizes={"train": 2, "validation": 1}, image_size=8)
    with pytest.raises(MissingSplitError) as error:
        read_huggingface_split(demo_source(root), "test", key=KEY)
    assert str(error.value) == (f"{root} has no test split (splits: train, validation): add one named 'test', or "
                                f"set {KEY}.splits.test to the split that holds it")


# ---------------------------------------------------------------------------------------------------------------------
# The config


CONFIG_ERRORS = [
    # (case, changes to the demo's source, message with {root} for the demo folder)
    ("name", {"name": "my-data"},
     f"{KEY}.name: 'my-data' is not a plain identifier (letters, digits and _, not starting with a digit)"),
    ("empty path", {"path": ""}, f"{KEY}.path: expected {EXPECTED_PATH}, got ''"),
    ("missing column", {"category": "dishes"},
     f"{KEY}.category: column 'dishes' is not in {{root}} split 'train' (columns: {DEMO_COLUMNS})"),
    ("missing image column", {"image": "photo"},
     f"{KEY}.image: column 'photo' is not in {{root}} split 'train' (columns: {DEMO_COLUMNS})"),
    ("missing nutrition column", {"nutrition": {"fat_g": "fats"}},
     f"{KEY}.nutrition.fat_g: column 'fats' is not in {{root}} split 'train' (columns: {DEMO_COLUMNS})"),
    ("missing question column", {"conversations": {"recipe": {"question": "prompt", "answer": "answer"}}},
     f"{KEY}.conversations.recipe.question: column 'prompt' is not in {{root}} split 'train' "
     f"(columns: {DEMO_COLUMNS})"),
    ("missing id column", {"id": "uid"},
     f"{KEY}.id: column 'uid' is not in {{root}} split 'train' (columns: {DEMO_COLUMNS})"),
    ("image of the wrong type", {"image": "kcal"},
     f"{KEY}.image: column 'kcal' of {{root}} split 'train' holds Value('float64'), expected an Image feature or a "
     f"string column of file paths"),
    ("category of the wrong type", {"category": "kcal"},
     f"{KEY}.category: column 'kcal' of {{root}} split 'train' holds Value('float64'), expected a string or "
     f"ClassLabel column"),
    ("ingredients of the wrong type", {"ingredients": "fat"},
     f"{KEY}.ingredients: column 'fat' of {{root}} split 'train' holds Value('float64'), expected a "
     f"list-of-strings or a string column"),
    ("nutrition of the wrong type", {"nutrition": {"fat_g": "ingredients"}},
     f"{KEY}.nutrition.fat_g: column 'ingredients' of {{root}} split 'train' holds List(Value('string')), expected "
     f"a numeric column (or strings holding numbers)"),
    ("answer of the wrong type", {"conversations": {"recipe": {"question": "question", "answer": "kcal"}}},
     f"{KEY}.conversations.recipe.answer: column 'kcal' of {{root}} split 'train' holds Value('float64'), expected "
     f"a string column"),
    ("unknown task", {"conversations": {"caption": {"question": "question", "answer": "answer"}}},
     f"{KEY}.conversations: unknown task 'caption'; expected among category, ingredients, recipe, nutrition"),
    ("malformed pair", {"conversations": {"recipe": {"question": "question"}}},
     f"{KEY}.conversations.recipe: expected {{{{question: column, answer: column}}}}, got {{{{'question': "
     f"'question'}}}}"),
    ("column twice for a task", {"conversations": {"recipe": {"question": "answer", "answer": "answer"}}},
     f"{KEY}.conversations.recipe: column 'answer' is given twice, as question and as answer; expected two "
     f"columns"),
    ("task mapped twice", {"recipe": "answer"},
     f"{KEY}.conversations.recipe: the task is also mapped by {KEY}.recipe; give one of them (the conversation "
     f"would replace the recipe answer)"),
    ("unknown nutrition field", {"nutrition": {"kcal": "kcal"}},
     f"{KEY}.nutrition: unknown field 'kcal'; expected among mass_g, energy_kcal, fat_g, carbohydrate_g, protein_g"),
    ("empty nutrition", {"nutrition": {}},
     f"{KEY}.nutrition: maps no field; give field -> column for some of mass_g, energy_kcal, fat_g, "
     f"carbohydrate_g, protein_g, or leave it out"),
    ("no task", {"category": None, "ingredients": None, "nutrition": None, "conversations": None},
     f"{KEY}: no task is mapped; give at least one of category, ingredients, recipe, nutrition or conversations"),
    ("unknown split", {"splits": {"dev": "validation"}},
     f"{KEY}.splits: unknown split 'dev'; expected keys among train, val, test"),
    ("split not in the dataset", {"splits": {"val": "dev"}},
     f"{KEY}.splits.val: split 'dev' is not in {{root}} (splits: train, validation, test)"),
    ("empty split name", {"splits": {"val": ""}}, f"{KEY}.splits.val: expected the dataset's split name, got ''"),
]


@pytest.mark.parametrize("changes, message", [case[1:] for case in CONFIG_ERRORS],
                         ids=[case[0] for case in CONFIG_ERRORS])
def test_config_error_is_one_line_naming_the_key(demo_hf, changes, message):
    source = replace(demo_source(demo_hf), **changes)
    with pytest.raises(ValueError) as error:
        check_huggingface_source(source, KEY)
    assert str(error.value) == message.format(root=demo_hf)
    with pytest.raises(ValueError) as error:  # the reader checks the same, before reading a row
        read_huggingface_split(source, "train", key=KEY)
    assert str(error.value) == message.format(root=demo_hf)


def test_config_error_in_a_single_split_dataset_names_no_split(tmp_path):
    Dataset.from_dict({"image": ["a.png"], "dish": ["soup"]}).save_to_disk(str(tmp_path))
    with pytest.raises(ValueError) as error:
        check_huggingface_source(HuggingFaceSource(path=str(tmp_path), category="label"), KEY)
    assert str(error.value) == f"{KEY}.category: column 'label' is not in {tmp_path} (columns: image, dish)"


def test_missing_or_unknown_path_is_named(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a dataset")
    cases = [
        (tmp_path / "nowhere", FileNotFoundError, f"{KEY}.path: {tmp_path / 'nowhere'} does not exist; expected "
                                                  f"{EXPECTED_PATH}"),
        (tmp_path / "notes", ValueError, f"{KEY}.path: {tmp_path / 'notes'} is neither a dataset written by "
                                         f"save_to_disk (no dataset_dict.json, or state.json and dataset_info.json) "
                                         f"nor a folder of parquet files; expected {EXPECTED_PATH}"),
        (tmp_path / "notes" / "readme.txt", ValueError, f"{KEY}.path: {tmp_path / 'notes' / 'readme.txt'} is a "
                                                        f"file but not a .parquet file; expected {EXPECTED_PATH}"),
        (tmp_path / "*.parquet", FileNotFoundError, f"{KEY}.path: no parquet file matches {tmp_path / '*.parquet'}; "
                                                    f"expected {EXPECTED_PATH}"),
    ]
    for path, kind, message in cases:
        with pytest.raises(kind) as error:
            check_huggingface_source(HuggingFaceSource(path=str(path), category="dish"), KEY)
        assert str(error.value) == message


# ---------------------------------------------------------------------------------------------------------------------
# Bad rows


TOY_FEATURES = Features({
    "image": Image(), "path": Value("string"), "id": Value("string"), "dish": ClassLabel(names=["soup", "salad"]),
    "label": Value("string"), "ingredients": List(Value("string")), "names": Value("string"),
    "steps": List(Value("string")), "fat": Value("float64"), "kcal": Value("string"), "question": Value("string"),
    "answer": Value("string"),
})


def toy_row(index: int) -> dict:
    return {"image": {"bytes": png_bytes(), "path": None}, "path": "images/plate.png", "id": f"dish-{index}",
            "dish": 0, "label": "soup", "ingredients": ["tomato", "basil"], "names": "tomato, basil",
            "steps": ["Chop.", "Boil."], "fat": 1.5, "kcal": "120", "question": "How?", "answer": "1. Chop."}


def write_toy(root, bad_row: dict | None = None):
    """A DatasetDict with one train split of three rows, row 1 changed by ``bad_row``."""
    rows = [toy_row(index) for index in range(3)]
    rows[1] |= bad_row or {}
    DatasetDict({"train": Dataset.from_list(rows, features=TOY_FEATURES)}).save_to_disk(str(root))
    (root / "images").mkdir()
    (root / "images" / "plate.png").write_bytes(png_bytes())
    return root


def toy_source(root, **changes) -> HuggingFaceSource:
    return replace(HuggingFaceSource(path=str(root), name="toy", category="dish", ingredients="ingredients",
                                     nutrition={"fat_g": "fat", "energy_kcal": "kcal"},
                                     conversations={"recipe": {"question": "question", "answer": "answer"}}),
                   **changes)


def test_good_toy_row_is_read_exactly(tmp_path):
    root = write_toy(tmp_path)
    records = read_huggingface_split(toy_source(root), "train", val_fraction=ALL_TRAIN)
    assert records[0] == FoodRecord(
        id="train/0", image=DatasetImage(str(root), "train", 0, "image"), dataset="toy", category="soup",
        ingredients=(Ingredient("tomato", 0.0), Ingredient("basil", 0.0)),
        nutrition={"energy_kcal": 120.0, "fat_g": 1.5}, conversations={"recipe": ("How?", "1. Chop.")})
    with_paths = read_huggingface_split(toy_source(root, image="path", id="id", recipe="steps", conversations=None),
                                        "train", val_fraction=ALL_TRAIN)
    assert [(r.id, r.image, r.recipe) for r in with_paths] == [
        (f"dish-{index}", str(root / "images" / "plate.png"), ("Chop.", "Boil.")) for index in range(3)]


BAD_ROWS = [
    # (case, row 1 changes, source changes, message ({root}: the dataset folder; it starts with the skip reason))
    ("empty label", {"label": ""}, {"category": "label"}, "empty value: column 'label' (category) is ''"),
    ("blank label", {"label": "  "}, {"category": "label"}, "empty value: column 'label' (category) is '  '"),
    ("no class", {"dish": None}, {}, "empty value: column 'dish' (category) is None, not a label"),
    ("class -1", {"dish": -1}, {}, "empty value: column 'dish' (category) is -1, not a label"),
    ("no ingredients", {"ingredients": []}, {}, "empty value: column 'ingredients' (ingredients) is []"),
    ("blank ingredient names", {"names": " , "}, {"ingredients": "names"},
     "empty value: column 'names' (ingredients) is ' , '"),
    ("no recipe", {"steps": None}, {"recipe": "steps", "conversations": None},
     "empty value: column 'steps' (recipe) is None"),
    ("negative nutrition", {"fat": -3.0}, {},
     "bad nutrition value: column 'fat' (nutrition fat_g) is -3, expected a number in [0, 1000]"),
    ("absurd nutrition", {"kcal": "25000"}, {},
     "bad nutrition value: column 'kcal' (nutrition energy_kcal) is 25000, expected a number in [0, 10000]"),
    ("nan nutrition", {"fat": math.nan}, {},
     "bad nutrition value: column 'fat' (nutrition fat_g) is nan, expected a number in [0, 1000]"),
    ("infinite nutrition", {"kcal": "inf"}, {},
     "bad nutrition value: column 'kcal' (nutrition energy_kcal) is 'inf', expected a number in [0, 10000]"),
    ("text nutrition", {"kcal": "lots"}, {},
     "bad nutrition value: column 'kcal' (nutrition energy_kcal) is 'lots', expected a number in [0, 10000]"),
    ("no nutrition value", {"fat": None}, {}, "empty value: column 'fat' (nutrition fat_g) is None"),
    ("blank answer", {"answer": " "}, {}, "empty value: column 'answer' (recipe answer) is ' '"),
    ("no question", {"question": None}, {}, "empty value: column 'question' (recipe question) is None"),
    ("no image", {"image": None}, {}, "missing image: column 'image' is empty"),
    ("no image path", {"path": None}, {"image": "path"},
     "missing image: column 'path' is None, expected a file path"),
    ("missing image file", {"path": "images/gone.png"}, {"image": "path"},
     "missing image: {root}/images/gone.png does not exist or is not a file"),
    ("unreadable image file", {"path": "dataset_dict.json"}, {"image": "path"},
     "unreadable image: {root}/dataset_dict.json is not an image format PIL recognises"),
    ("duplicate id", {"id": "dish-0"}, {"id": "id"}, "duplicate id: 'dish-0' (column 'id') is also row 0"),
    ("empty id", {"id": ""}, {"id": "id"}, "empty value: column 'id' (id) is ''"),
    ("no id", {"id": None}, {"id": "id"}, "empty value: column 'id' (id) is None"),
]


@pytest.mark.parametrize("row, changes, message", [case[1:] for case in BAD_ROWS], ids=[case[0] for case in BAD_ROWS])
def test_bad_row_raises_naming_source_split_row_and_column(tmp_path, row, changes, message):
    root = write_toy(tmp_path, row)
    with pytest.raises(DataFormatError) as error:
        read_huggingface_split(toy_source(root, **changes), "train", val_fraction=ALL_TRAIN)
    assert str(error.value) == f"{root} split 'train' row 1: " + message.format(root=root)


class Source:
    """An image source whose ``open()`` returns what ``opener`` does."""

    def __init__(self, opener):
        self.opener = opener

    def open(self):
        return self.opener()

    def __str__(self):
        return "somewhere row 7"


@pytest.mark.parametrize("opener, message", [
    (lambda: PILImage.open(io.BytesIO(b"junk")),
     "unreadable image: somewhere row 7 is not an image format PIL recognises"),
    (lambda: PILImage.open(io.BytesIO(noisy_png_bytes()[:1900])),
     "unreadable image: somewhere row 7 is truncated or corrupt (image file is truncated)"),
    # A dataset image stored as a path only (parquet written without embedding), whose file is gone.
    (lambda: PILImage.open("/nonexistent/plate.png"),
     "missing image: somewhere row 7 refers to /nonexistent/plate.png, which does not exist"),
], ids=["garbage", "truncated", "file gone"])
def test_check_image_names_an_image_source(opener, message):
    with pytest.raises(DataFormatError) as error:
        check_image(Source(opener))
    assert str(error.value) == message


def test_open_image_reads_paths_and_sources(tmp_path):
    (tmp_path / "plate.png").write_bytes(png_bytes((1, 2, 3)))
    with open_image(str(tmp_path / "plate.png")) as image:
        assert image.getpixel((0, 0)) == (1, 2, 3)
    with open_image(tmp_path / "plate.png") as image:
        assert image.size == (8, 8)
    with open_image(Source(lambda: PILImage.new("RGB", (3, 2)))) as image:
        assert image.size == (3, 2)
    check_image(Source(lambda: PILImage.new("RGB", (3, 2))))  # a good source passes


def test_source_parses_from_yaml_as_a_list_of_blocks():
    """Plain type hints only, so the CLI (jsonargparse) builds the blocks under ``data.huggingface``."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_argument("--huggingface", type=list[HuggingFaceSource] | None, default=None)
    config = parser.parse_string("""
        huggingface:
          - path: /data/food
            name: food101
            category: label
            splits: {val: dev}
            nutrition: {energy_kcal: kcal}
            conversations:
              recipe: {question: q, answer: a}
    """)
    assert parser.instantiate(config).huggingface == [HuggingFaceSource(
        path="/data/food", name="food101", category="label", splits={"val": "dev"},
        nutrition={"energy_kcal": "kcal"}, conversations={"recipe": {"question": "q", "answer": "a"}})]
