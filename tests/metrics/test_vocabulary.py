from __future__ import annotations

import json

import pytest

from rode_lightning.data.datamodule import with_vocabulary
from rode_lightning.data.records import FoodRecord, Ingredient
from rode_lightning.metrics.ingredients import IngredientIoU
from rode_lightning.metrics.vocabulary import IngredientVocabulary

CLUSTERS = {"cheese": ["cheddar cheese", "Mozzarella"], "oil": ["olive oil", "vegetable oils"]}


def test_names_map_to_their_cluster_after_normalisation_and_others_stay():
    vocabulary = IngredientVocabulary(CLUSTERS)
    assert vocabulary.canonical("Cheddar Cheeses") == "cheese"
    assert vocabulary.canonical("mozzarella") == "cheese"
    assert vocabulary.canonical("Vegetable oil") == "oil"
    assert vocabulary.canonical("Cheese") == "cheese"
    assert vocabulary.canonical("Tomatoes") == "tomato"  # in no cluster: normalised only
    assert len(vocabulary) == 2


def test_iou_compares_clusters_when_given_a_vocabulary():
    prediction, target = "cheese, oil, tomato", ["cheddar cheese", "olive oil", "basil"]
    plain = IngredientIoU()
    plain.update([prediction], [target])
    clustered = IngredientIoU(vocabulary=IngredientVocabulary(CLUSTERS))
    clustered.update([prediction], [target])
    # plain: no overlap among 6 distinct names; clustered: {cheese, oil} shared out of {cheese, oil, tomato, basil}
    assert plain.compute()["dataset_iou"].item() == 0.0
    assert clustered.compute()["dataset_iou"].item() == pytest.approx(2 / 4)


def test_record_ingredients_are_renamed_and_merged_heaviest_first():
    record = FoodRecord(id="d", image="x.png", dataset="nutrition5k", ingredients=(
        Ingredient("olive oil", 10.0), Ingredient("cheddar cheese", 30.0), Ingredient("mozzarella", 25.0),
        Ingredient("vegetable oil", 5.0)))
    renamed = with_vocabulary(record, IngredientVocabulary(CLUSTERS))
    assert renamed.ingredients == (Ingredient("cheese", 55.0), Ingredient("oil", 15.0))


@pytest.mark.parametrize("content, message", [
    ('{"cheese": ["brie"], "dairy": ["Brie"]}', "'Brie' is in two clusters, 'cheese' and 'dairy'"),
    ('{"cheese": "brie"}', "cluster 'cheese' must map to a list of names"),
    ('["cheese"]', "expected an object mapping cluster names to lists of names"),
    ('{"cheese": [}', "malformed JSON at line 1"),
])
def test_bad_vocabulary_files_are_named(tmp_path, content, message):
    path = tmp_path / "vocabulary.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="vocabulary.json") as error:
        IngredientVocabulary.from_file(path)
    assert message in str(error.value)


def test_missing_vocabulary_file_names_the_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.ingredient_vocabulary: .*nowhere.json does not exist"):
        IngredientVocabulary.from_file(tmp_path / "nowhere.json")


def test_datamodule_applies_the_vocabulary_to_every_dataset(tmp_path):
    from tests.data.test_datamodule import tiny_datamodule

    path = tmp_path / "vocabulary.json"
    path.write_text(json.dumps({"greens": ["lettuce", "broccoli", "cucumber"]}))
    module = tiny_datamodule(tmp_path / "demo", ingredient_vocabulary=str(path))
    names = {name for split in module.records.values() for record in split for name in record.ingredient_names}
    assert "greens" in names and not names & {"lettuce", "broccoli", "cucumber"}
    assert {record.dataset for split in module.records.values() for record in split
            if "greens" in record.ingredient_names} == {"unifood", "nutrition5k"}
