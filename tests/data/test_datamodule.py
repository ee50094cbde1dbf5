from __future__ import annotations

import pytest

from rode_lightning.data.datamodule import FoodDataModule
from tests.conftest import demo_format


TINY_DEMO = [{"dataset": "unifood", "demo_sizes": {"train": 16, "val": 4, "test": 4}},
             {"dataset": "nutrition5k", "demo_sizes": {"train": 32, "test": 8}}]


def tiny_datamodule(demo_dir, **overrides) -> FoodDataModule:
    settings = dict(demo_dir=str(demo_dir), sources=TINY_DEMO, batch_size=4, eval_batch_size=4)
    settings.update(overrides)
    module = FoodDataModule(**settings)
    module.conversation_format = demo_format()
    module.setup("fit")
    return module


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("datamodule_demo")


def test_both_datasets_serve_their_tasks_and_evaluation_is_grouped_by_task(demo_dir):
    module = tiny_datamodule(demo_dir)
    train_pairs = {(s.record.dataset, s.task) for s in module.datasets["train"].samples}
    assert train_pairs == {("unifood", t) for t in ("category", "ingredients", "recipe", "nutrition")} | {
        ("nutrition5k", "ingredients"), ("nutrition5k", "nutrition")}
    val = [(s.record.dataset, s.task) for s in module.datasets["val"].samples]
    assert val == sorted(val)
    batch = next(iter(module.train_dataloader()))
    assert len(batch.tasks) == len(batch.datasets) == len(batch) == 4
    summary = module.summary()
    # The demo Nutrition5k copy lists a dish without an overhead image in each split: counted, not silent.
    assert "nutrition5k" in summary and "skipped: none" not in summary
    assert set(module.ingredient_baselines) == set(module.nutrition_baselines) == {"unifood", "nutrition5k"}


def test_sampling_weights_per_dataset_and_task_with_the_specific_key_winning(demo_dir):
    weights = {"unifood": 1.0, "nutrition5k": 3.0, "unifood/recipe": 0.0}
    module = tiny_datamodule(demo_dir, sources=[{**TINY_DEMO[0], "weight": 1.0, "task_weights": {"recipe": 0.0}},
                                                {**TINY_DEMO[1], "weight": 3.0}])
    samples = module.datasets["train"].samples
    expected = [0.0 if (s.record.dataset, s.task) == ("unifood", "recipe") else weights[s.record.dataset]
                for s in samples]
    assert module.sample_weights().tolist() == expected
    sampler = module.train_dataloader().sampler
    drawn = [samples[index] for _ in range(20) for index in sampler]
    assert not any(s.record.dataset == "unifood" and s.task == "recipe" for s in drawn)
    share = sum(s.record.dataset == "nutrition5k" for s in drawn) / len(drawn)
    expected_share = sum(w for w, s in zip(expected, samples) if s.record.dataset == "nutrition5k") / sum(expected)
    assert share == pytest.approx(expected_share, abs=0.04)
    assert len(list(sampler)) == len(samples)


def test_only_one_dataset_can_be_served(demo_dir):
    module = tiny_datamodule(demo_dir, sources=TINY_DEMO[1:], tasks={"eval": ["nutrition"]})
    assert {s.record.dataset for split in ("train", "val", "test") for s in module.datasets[split].samples} == {
        "nutrition5k"}
    assert {s.task for s in module.datasets["val"].samples} == {"nutrition"}


@pytest.mark.parametrize("overrides, message", [
    ({"sources": [{"dataset": "unifood", "task_weights": {"cooking": 1.0}}]},
     "data.sources[0].task_weights: unknown task 'cooking'"),
    ({"sources": [{"dataset": "unifood", "weight": -1.0}]}, "data.sources[0].weight: -1.0; expected a number >= 0"),
    ({"sources": [{"dataset": "food102"}]}, "data.sources[0].dataset: 'food102' is not a registered dataset"),
    ({"sources": []}, "data.sources: an empty list"),
    ({"predict": {"tasks": ["taste"]}}, "data.predict.tasks: ['taste']"),
    ({"predict": {"tasks": ["conversation"]}}, "data.predict.tasks: ['conversation'] - expected a non-empty subset of "
                                               "['category', 'ingredients', 'recipe', 'nutrition']"),
    ({"tasks": {"train": []}}, "data.tasks.train: empty list"),
    ({"tasks": {"eval": ["taste"]}}, "data.tasks.eval: ['taste']"),
    ({"tasks": {"test": ["recipe"]}}, "data.tasks: TaskSelection.__init__() got an unexpected keyword argument 'test'"),
    ({"sources": [{"dataset": "unifood", "val_fraction": 1.5}]},
     "data.sources[0].val_fraction=1.5: expected a number in (0, 1)"),
    ({"sources": [{"dataset": "unifood", "root": "/"}, {"dataset": "nutrition5k"}]},
     "data.sources[1]: no root, so a demo copy, beside sources with data of your own"),
    ({"sources": [{"dataset": "unifood"}, {"dataset": "unifood"}]}, "'unifood' is already served by data.sources[0]"),
])
def test_bad_settings_fail_at_construction_naming_the_key(overrides, message):
    with pytest.raises(ValueError) as error:
        FoodDataModule(**overrides)
    assert message in str(error.value)


def test_all_zero_weights_are_refused(demo_dir):
    module = tiny_datamodule(demo_dir, sources=[{**source, "weight": 0.0} for source in TINY_DEMO])
    with pytest.raises(ValueError, match="every training sample has weight 0"):
        module.train_dataloader()


def test_predict_without_a_source_says_what_to_set(demo_dir):
    module = tiny_datamodule(demo_dir)
    with pytest.raises(ValueError, match="data.predict.source"):
        module.predict_dataloader()


def test_a_folder_of_photos_is_asked_the_four_food_tasks_by_default(tmp_path):
    from rode_lightning.conventions import TASKS
    from rode_lightning.data.predict import read_prediction_requests
    from PIL import Image

    module = FoodDataModule(demo_dir=str(tmp_path / "demo"), predict={"source": str(tmp_path)})
    assert module.predict_options.tasks == list(TASKS)
    Image.new("RGB", (8, 8)).save(tmp_path / "dish.png")
    requests = read_prediction_requests(tmp_path, module.predict_options.tasks)
    assert [request.task for request in requests] == list(TASKS)
