"""Which datasets the data module serves, from where, and what it does when a split is missing.

The rule under test (``rode_lightning/data/sources.py``): demo copies (sources without a root) are served only when
no source has a root; a user who configures one dataset gets that dataset and nothing synthetic mixed in.
"""

from __future__ import annotations

import json
import logging
from collections import Counter

import datasets
import pytest

from rode_lightning.conventions import TASKS
from rode_lightning.data.datamodule import FoodDataModule
from rode_lightning.data.datasets.unifood.demo import generate_demo_unifood
from rode_lightning.data.datasets.food101.demo import generate_demo_food101
from rode_lightning.data.datasets import DATASETS
from rode_lightning.data.datasets.huggingface.demo import generate_demo_huggingface
from rode_lightning.data.errors import MissingSplitError
from rode_lightning.data.datasets.huggingface.files import clear_dataset_cache
from rode_lightning.data.prompts import answer_for
from rode_lightning.data.sources import DEMO_DATASETS, resolve_sources
from rode_lightning.data.splits import is_held_out
from rode_lightning.data.datasets.unifood.reader import read_unifood_split
from tests.conftest import demo_format

SMALL = dict(batch_size=4, eval_batch_size=4)
SMALL_DEMO = [{"dataset": "unifood", "demo_sizes": {"train": 12, "val": 4, "test": 4}},
              {"dataset": "nutrition5k", "demo_sizes": {"train": 32, "test": 8}}]
HUGGINGFACE = "huggingface"
ALL_DATASETS = ["unifood", "nutrition5k", "recipe1m", "food101", "vireo172", HUGGINGFACE]
HF_COLUMNS = {"category": "dish", "ingredients": "ingredients",  # the demo dataset's own (huggingface/demo.py)
              "nutrition": {"mass_g": "grams", "energy_kcal": "kcal", "fat_g": "fat", "carbohydrate_g": "carbs",
                            "protein_g": "protein"},
              "conversations": {"recipe": {"question": "question", "answer": "answer"}}}


@pytest.fixture(scope="module", autouse=True)
def _hf_cache(tmp_path_factory):
    # Nothing here reads parquet, but keep any datasets cache out of the home directory all the same.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf_cache"))
        clear_dataset_cache()
        yield
    clear_dataset_cache()


def unifood_folder(root, splits=None):
    return generate_demo_unifood(root, splits=splits or {"train": 12, "val": 4, "test": 4}, image_size=32)


def ids_of(path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def small_hf(tmp_path_factory):
    return generate_demo_huggingface(tmp_path_factory.mktemp("small_hf"), sizes={"train": 12, "validation": 4,
                                                                                 "test": 4}, image_size=32)


# ---------------------------------------------------------------------------------------------------------------------
# Nothing configured: the demo, and the log says so


def test_nothing_configured_serves_the_demo_copies_and_says_so(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="rode_lightning.data.sources"):
        module = FoodDataModule(demo_dir=str(tmp_path), **SMALL)
    assert DEMO_DATASETS == ("unifood", "nutrition5k")
    assert module.served == ["unifood", "nutrition5k"]
    for name in ("unifood", "nutrition5k"):
        source = module.sources[name]
        assert (source.name, source.root, source.demo, source.dataset) == (name, tmp_path / name, True,
                                                                           DATASETS[name])
        assert source.tasks == DATASETS[name].tasks
    assert module.evaluation_pairs == {"unifood": ["category", "ingredients", "recipe", "nutrition"],
                                       "nutrition5k": ["ingredients", "nutrition"]}
    assert caplog.messages == [
        f"no data.sources configured: serving the demo copies of unifood, nutrition5k generated in {tmp_path}"]
    assert list(tmp_path.iterdir()) == []  # nothing is written before prepare_data / setup


def test_resolving_with_nothing_configured_lists_only_the_named_demo_copies(tmp_path):
    served = resolve_sources([{"dataset": "food101"}], tmp_path)
    assert list(served) == ["food101"]
    assert (served["food101"].root, served["food101"].demo) == (tmp_path / "food101", True)
    served = resolve_sources([{"dataset": HUGGINGFACE}], tmp_path)
    hf = served[HUGGINGFACE]
    assert (hf.root, hf.demo, hf.dataset, hf.tasks) == (tmp_path / HUGGINGFACE, True, DATASETS[HUGGINGFACE], TASKS)
    assert hf.options.category == "dish"  # the demo's own column mapping


# ---------------------------------------------------------------------------------------------------------------------
# Configured data: served as configured, never mixed with demo copies


def test_only_the_configured_unifood_root_is_served_with_no_synthetic_nutrition5k(tmp_path, caplog):
    root = unifood_folder(tmp_path / "mine")
    demo_dir = tmp_path / "demo"
    with caplog.at_level(logging.INFO, logger="rode_lightning.data.sources"):
        module = FoodDataModule(sources=[{"dataset": "unifood", "root": str(root)}], demo_dir=str(demo_dir), **SMALL)
    assert "demo copies" not in caplog.text
    assert module.served == ["unifood"]
    assert (module.sources["unifood"].root, module.sources["unifood"].demo) == (root, False)
    assert module.evaluation_pairs == {"unifood": ["category", "ingredients", "recipe", "nutrition"]}
    module.setup("fit")
    for split in ("train", "val", "test"):
        samples = module.datasets[split].samples
        assert {s.record.dataset for s in samples} == {"unifood"}
        assert [r.id for r in module.records[split]] == ids_of(root / "annotations" / f"{split}.jsonl")
        assert {s.record.id for s in samples} == set(ids_of(root / "annotations" / f"{split}.jsonl"))
    assert len(module.datasets["train"]) == 12 * 4 and len(module.datasets["val"]) == len(module.datasets["test"]) == 16
    assert not demo_dir.exists()  # no demo copy was generated
    assert "nutrition5k" not in module.summary() and "demo copy" not in module.summary()


def test_sources_are_served_in_their_order_and_two_of_one_dataset_by_their_names(tmp_path):
    unifood = unifood_folder(tmp_path / "unifood")
    food101 = generate_demo_food101(tmp_path / "food101", sizes={"train": 16, "test": 4}, image_size=32)
    served = resolve_sources([{"dataset": "food101", "root": str(food101)},
                              {"dataset": "unifood", "root": str(unifood)}], tmp_path / "demo")
    assert list(served) == ["food101", "unifood"]
    assert (served["food101"].root, served["food101"].demo) == (food101, False)
    served = resolve_sources([{"dataset": "unifood", "root": str(unifood)},
                              {"dataset": "unifood", "root": str(unifood), "name": "again", "tasks": ["recipe"]}],
                             tmp_path / "demo")
    assert list(served) == ["unifood", "again"] and served["again"].tasks == ("recipe",)
    records = served["again"].read("test", "raise", Counter())
    assert {record.dataset for record in records} == {"again"}


@pytest.mark.parametrize("sources, message", [
    ([{"dataset": "unifood", "root": "/"}, {"dataset": "nutrition5k"}],
     "data.sources[1]: no root, so a demo copy, beside sources with data of your own; set its root, or remove it "
     "(demo copies are served only when no source has a root)"),
    ([{"dataset": "food102"}],
     "data.sources[0].dataset: 'food102' is not a registered dataset; expected one of unifood, nutrition5k, "
     "recipe1m, food101, vireo172, huggingface"),
    ([], "data.sources: an empty list; expected at least one source (or null for the demo data)"),
    ([{"dataset": "food101"}, {"dataset": "food101"}],
     "data.sources[1].name: 'food101' is already served by data.sources[0]; give each source its own name"),
    ([{"dataset": "unifood", "name": "my food"}], "data.sources[0].name: 'my food' - expected a plain identifier"),
    ([{"dataset": "unifood", "tasks": ["recipe", "dessert"]}],
     "data.sources[0].tasks: ['dessert'] - Uni-Food serves ['category', 'ingredients', 'recipe', 'nutrition']"),
    ([{"dataset": "food101", "tasks": ["recipe"]}], "data.sources[0].tasks: ['recipe'] - Food-101 serves ['category']"),
    ([{"dataset": "unifood", "val_fraction": 1.0}], "data.sources[0].val_fraction=1.0: expected a number in (0, 1)"),
    ([{"dataset": "unifood", "weight": -1}], "data.sources[0].weight: -1; expected a number >= 0"),
    ([{"dataset": "unifood", "task_weights": {"recipes": 1.0}}],
     "data.sources[0].task_weights: unknown task 'recipes'; expected some of category, ingredients, recipe"),
    ([{"dataset": "unifood", "options": {"columns": 1}}], "data.sources[0].options: ['columns'] - Uni-Food takes no "
                                                          "options"),
    ([{"dataset": "recipe1m", "options": {"min_ingredient": 3}}],
     "data.sources[0].options: ['min_ingredient'] - Recipe1M takes ['max_ingredients', 'max_instructions'"),
    ([{"root": "/"}], "data.sources[0]: {'root': '/'} - expected a mapping with at least 'dataset' (and 'root')"),
    ([{"dataset": "unifood", "roots": "/"}], "data.sources[0]: DatasetSource.__init__() got an unexpected keyword"),
])
def test_bad_sources_are_refused_naming_the_key(tmp_path, sources, message):
    with pytest.raises(ValueError) as error:
        FoodDataModule(sources=sources, demo_dir=str(tmp_path))
    assert message in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_two_huggingface_sources_of_one_name_are_refused_naming_the_second(small_hf, tmp_path):
    sources = [{"dataset": HUGGINGFACE, "root": str(small_hf), "options": HF_COLUMNS}] * 2
    with pytest.raises(ValueError, match=r"^data\.sources\[1\]\.name: 'huggingface' is already served by "):
        FoodDataModule(sources=sources, demo_dir=str(tmp_path))


# ---------------------------------------------------------------------------------------------------------------------
# Missing splits


def test_unifood_without_val_holds_out_train_records_by_id(tmp_path, caplog):
    root = unifood_folder(tmp_path / "mine", {"train": 20, "test": 4})
    assert not (root / "annotations" / "val.jsonl").exists()
    original = ids_of(root / "annotations" / "train.jsonl")
    held = [f"demo-train-{i:05d}" for i in (9, 11, 13, 18)]
    assert [i for i in original if is_held_out(i, 0.2)] == held  # the split this test pins
    module = FoodDataModule(sources=[{"dataset": "unifood", "root": str(root), "val_fraction": 0.2}],
                            demo_dir=str(tmp_path / "demo"), **SMALL)
    with caplog.at_level(logging.INFO, logger="rode_lightning.data.datasets.unifood.reader"):
        module.setup("fit")
    val = [r.id for r in module.records["val"]]
    train = [r.id for r in module.records["train"]]
    assert val == held
    assert train == [i for i in original if i not in held]
    assert not set(val) & set(train) and sorted(val + train) == sorted(original)
    assert {s.record.id for s in module.datasets["val"].samples} == set(held)
    assert {s.record.id for s in module.datasets["train"].samples} == set(train)
    assert (f"Uni-Food {root} has no annotations/val.jsonl: validating on the 20% of train.jsonl held out by "
            f"record id (the source's val_fraction)") in caplog.messages
    assert "val" not in module.missing_splits


def test_unifood_without_test_fits_and_refuses_test_naming_the_file(tmp_path):
    root = unifood_folder(tmp_path / "mine", {"train": 12, "val": 4})
    module = FoodDataModule(sources=[{"dataset": "unifood", "root": str(root)}], demo_dir=str(tmp_path / "demo"),
                            **SMALL)
    module.setup("fit")
    test_file = root / "annotations" / "test.jsonl"
    assert module.missing_splits == {"test": [
        f"Uni-Food split 'test': expected the annotation file {test_file}, which does not exist"]}
    assert "test" not in module.datasets and module.records["test"] == []
    with pytest.raises(ValueError) as error:
        module.setup("test")
    assert str(error.value).startswith("test needs a test split")
    assert str(test_file) in str(error.value)
    fresh = FoodDataModule(sources=[{"dataset": "unifood", "root": str(root)}], demo_dir=str(tmp_path / "demo"),
                           **SMALL)
    with pytest.raises(ValueError, match=r"^test needs a test split, and no served dataset has one: .*test\.jsonl"):
        fresh.setup("test")


def test_a_split_missing_from_one_dataset_is_served_by_the_others(tmp_path):
    unifood = unifood_folder(tmp_path / "mine", {"train": 12, "val": 4})
    food101 = generate_demo_food101(tmp_path / "food101", sizes={"train": 16, "test": 4}, image_size=32)
    module = FoodDataModule(sources=[{"dataset": "unifood", "root": str(unifood)},
                                     {"dataset": "food101", "root": str(food101)}], demo_dir=str(tmp_path / "demo"),
                            **SMALL)
    module.setup("test")
    assert module.served == ["unifood", "food101"]
    assert len(module.missing_splits["test"]) == 1 and "test.jsonl" in module.missing_splits["test"][0]
    test = module.datasets["test"].samples
    assert {(s.record.dataset, s.task) for s in test} == {("food101", "category")}
    assert len(test) == 4
    assert {s.record.dataset for s in module.datasets["val"].samples} == {"unifood", "food101"}


# ---------------------------------------------------------------------------------------------------------------------
# Every kind at once, from the demo copies


@pytest.fixture(scope="module")
def every_dataset(tmp_path_factory):
    sources = [SMALL_DEMO[0], {"dataset": "nutrition5k"}, *({"dataset": name} for name in ALL_DATASETS[2:])]
    module = FoodDataModule(sources=sources, demo_dir=str(tmp_path_factory.mktemp("every_demo")), **SMALL)
    module.prepare_data()
    module.setup("fit")
    module.conversation_format = demo_format()
    return module


def test_every_kind_is_served_with_the_tasks_its_labels_allow(every_dataset):
    expected = {"unifood": ["category", "ingredients", "recipe", "nutrition"],
                "nutrition5k": ["ingredients", "nutrition"],
                "recipe1m": ["category", "ingredients", "recipe", "nutrition"],
                "food101": ["category"],
                "vireo172": ["category", "ingredients"],
                HUGGINGFACE: ["category", "ingredients", "recipe", "nutrition"]}
    assert every_dataset.evaluation_pairs == expected
    assert every_dataset.served == ALL_DATASETS
    assert all(source.demo for source in every_dataset.sources.values())
    for split in ("train", "val", "test"):
        pairs = {(s.record.dataset, s.task) for s in every_dataset.datasets[split].samples}
        assert pairs == {(name, task) for name, tasks in expected.items() for task in tasks}, split
    assert every_dataset.missing_splits == {}


def test_every_kind_gives_a_batch_from_each_loader(every_dataset):
    for loader in (every_dataset.train_dataloader(), every_dataset.val_dataloader(), every_dataset.test_dataloader()):
        batch = next(iter(loader))
        assert batch.pixel_values.shape == (4, 3, 32, 32)
        assert len(batch.tasks) == len(batch.datasets) == len(batch.references) == 4
    # Evaluation batches are grouped by dataset, so the first ones may never reach the Hugging Face rows: read one of
    # its samples of every split through InstructionDataset (and so through open_image on a DatasetImage).
    for split in ("train", "val", "test"):
        dataset = every_dataset.datasets[split]
        index = next(i for i, s in enumerate(dataset.samples) if s.record.dataset == HUGGINGFACE)
        assert not isinstance(dataset.samples[index].record.image, str)
        item = dataset[index]
        assert item.dataset == HUGGINGFACE and item.image.mode == "RGB" and item.reference


def test_recipe1m_nutrition_has_no_carbohydrate(every_dataset):
    for split in ("train", "val", "test"):
        samples = every_dataset.datasets[split].samples
        recipe1m = [answer_for(s.record, s.task) for s in samples if (s.record.dataset, s.task) == ("recipe1m",
                                                                                                    "nutrition")]
        assert recipe1m and not any("carbohydrate" in answer for answer in recipe1m)
        assert all(answer.startswith("mass: ") and ", protein: " in answer for answer in recipe1m)
        assert not any("carbohydrate_g" in r.nutrition for r in every_dataset.records[split]
                       if r.dataset == "recipe1m" and r.nutrition)
        unifood = [answer_for(s.record, s.task) for s in samples if (s.record.dataset, s.task) == ("unifood",
                                                                                                   "nutrition")]
        assert unifood and all("carbohydrate: " in answer for answer in unifood)


def test_every_kind_counts_per_dataset(every_dataset):
    # Demo sizes: Uni-Food 12/4/4 (its demo_sizes); the Hugging Face demo its own 64/16/16.
    for split, unifood, hf in (("train", 12, 64), ("val", 4, 16), ("test", 4, 16)):
        counts = Counter(r.dataset for r in every_dataset.records[split])
        assert (counts["unifood"], counts[HUGGINGFACE]) == (unifood, hf), split
        assert set(counts) == set(ALL_DATASETS)


# ---------------------------------------------------------------------------------------------------------------------
# Sampling weights by a source's name


def test_sampling_weights_by_a_huggingface_source_name(small_hf, tmp_path):
    unifood = unifood_folder(tmp_path / "unifood")
    module = FoodDataModule(sources=[{"dataset": "unifood", "root": str(unifood)},
                                     {"dataset": HUGGINGFACE, "root": str(small_hf), "name": "mine", "weight": 3.0,
                                      "task_weights": {"recipe": 0.0}, "options": HF_COLUMNS}],
                            demo_dir=str(tmp_path / "demo"), **SMALL)
    assert module.served == ["unifood", "mine"] and module.weighted
    assert module.sources["mine"].key == "data.sources[1]"
    module.setup("fit")
    samples = module.datasets["train"].samples
    expected = [1.0 if s.record.dataset == "unifood" else 0.0 if s.task == "recipe" else 3.0 for s in samples]
    assert module.sample_weights().tolist() == expected
    assert Counter(expected) == {1.0: 48, 3.0: 12 * 3, 0.0: 12}
    module.conversation_format = demo_format()
    batch = next(iter(module.train_dataloader()))
    assert not any(d == "mine" and t == "recipe" for d, t in zip(batch.datasets, batch.tasks))


def test_without_weights_training_is_one_shuffled_pass(tmp_path):
    module = FoodDataModule(sources=SMALL_DEMO, demo_dir=str(tmp_path), **SMALL)
    assert not module.weighted
    module.setup("fit")
    module.conversation_format = demo_format()
    order = list(module.train_dataloader().sampler)
    assert sorted(order) == list(range(len(module.datasets["train"])))


def test_a_root_that_does_not_exist_is_refused_at_construction_naming_the_key(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        FoodDataModule(sources=[{"dataset": "food101", "root": str(tmp_path / "food-101")}])
    assert str(error.value) == (f"data.sources[0].root: {tmp_path / 'food-101'} does not exist or is not a "
                                f"directory; expected the Food-101 folder (images/, meta/)")
