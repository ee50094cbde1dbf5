from __future__ import annotations

import json

import pytest
from PIL import Image

from rode_lightning.data.errors import DataFormatError, SkipCounter
from rode_lightning.data.predict import (PredictionDataset, drop_unreadable_images,
                                         read_prediction_requests)
from rode_lightning.data.prompts import QUESTIONS
from rode_lightning.data.tokenizer import load_tokenizer
from tests.conftest import demo_format


def write_image(path, size=32):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (200, 40, 40)).save(path)
    return path


def test_a_folder_asks_every_task_about_every_image(tmp_path):
    write_image(tmp_path / "b.png")
    write_image(tmp_path / "sub" / "a.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    requests = read_prediction_requests(tmp_path, ["ingredients", "nutrition"])
    assert [(r.id, r.task) for r in requests] == [("b.png#ingredients", "ingredients"), ("b.png#nutrition", "nutrition"),
                                                  ("sub/a.jpg#ingredients", "ingredients"),
                                                  ("sub/a.jpg#nutrition", "nutrition")]
    assert requests[0].question == QUESTIONS["ingredients"][0]


def test_jsonl_requests_with_task_or_free_question_and_relative_paths(tmp_path):
    write_image(tmp_path / "images" / "soup.png")
    source = tmp_path / "requests.jsonl"
    source.write_text(json.dumps({"id": "q1", "image": "images/soup.png", "task": "category"}) + "\n\n"
                      + json.dumps({"image": str(tmp_path / "images" / "soup.png"), "question": "Is it spicy?"}) + "\n")
    first, second = read_prediction_requests(source, ["category"])
    assert (first.id, first.task, first.image) == ("q1", "category", str(tmp_path / "images" / "soup.png"))
    assert (second.id, second.task, second.question) == ("3", None, "Is it spicy?")


@pytest.mark.parametrize("content, message", [
    ('{"image": "a.png"', "requests.jsonl:1: malformed JSON"),
    ('{"image": "a.png", "task": "cooking"}', "requests.jsonl:1: unknown task 'cooking'"),
    ('{"image": "a.png"}', "requests.jsonl:1: give a 'task'"),
    ('{"task": "category"}', "requests.jsonl:1: expected an object with an 'image'"),
])
def test_malformed_requests_name_file_and_line(tmp_path, content, message):
    source = tmp_path / "requests.jsonl"
    source.write_text(content + "\n")
    with pytest.raises(DataFormatError, match=message):
        read_prediction_requests(source, ["category"])


def test_missing_source_and_empty_folder_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a folder of images nor a JSON/JSONL file"):
        read_prediction_requests(tmp_path / "nowhere", ["category"])
    with pytest.raises(DataFormatError, match="holds no image"):
        read_prediction_requests(tmp_path, ["category"])


def test_unreadable_and_truncated_images_are_skipped_and_counted(tmp_path):
    good = write_image(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    requests = read_prediction_requests(tmp_path, ["category", "ingredients"])
    skipped = SkipCounter()
    kept = drop_unreadable_images(requests, skipped)
    assert {request.image for request in kept} == {str(good)}
    assert sum(skipped.values()) == 4  # two bad images x two tasks
    assert any("truncated.png" in reason for reason in skipped)


def test_prediction_batches_are_left_padded_with_image_tokens(tmp_path):
    write_image(tmp_path / "a.png")
    requests = read_prediction_requests(tmp_path, ["category", "recipe"])
    tokenizer = load_tokenizer("demo")
    spelling = demo_format(image_size=32, num_image_tokens=4)
    dataset = PredictionDataset(requests)
    batch = spelling([dataset[0], dataset[1]])
    assert batch.pixel_values.shape == (2, 3, 32, 32)
    assert batch.input_ids is None and batch.references is None and not batch.has_answers
    assert batch.image_paths == [str(tmp_path / "a.png")] * 2 and batch.tasks == ["category", "recipe"]
    lengths = [len(spelling.encode_prompt(request.question)) for request in requests]
    width = batch.prompt_ids.shape[1]
    for row, length in enumerate(lengths):
        assert batch.prompt_attention_mask[row].tolist() == [0] * (width - length) + [1] * length
        assert (batch.prompt_ids[row] == tokenizer.convert_tokens_to_ids("<image>")).sum() == 4
    assert batch.cluster_ids is None  # not placed in a cluster: a cluster-routed model refuses, never routes to 0
    dataset.cluster_ids = [3, 1]
    assert spelling([dataset[0], dataset[1]]).cluster_ids.tolist() == [3, 1]


def test_predict_after_fit_in_one_process_places_the_requests_in_the_training_clusters(tmp_path):
    """setup("predict") on a data module set up for fit already: the requests still get their clusters (MoCLE),
    never the cluster 0 of a request no one placed."""
    from rode_lightning.data.datamodule import FoodDataModule

    write_image(tmp_path / "photos" / "a.png")
    sources = [{"dataset": "unifood", "demo_sizes": {"train": 12, "val": 4, "test": 4}},
               {"dataset": "nutrition5k", "demo_sizes": {"train": 32, "test": 8}}]
    module = FoodDataModule(demo_dir=str(tmp_path / "demo"), sources=sources,
                            clusters={"count": 3, "encoder": "tfidf"},
                            predict={"source": str(tmp_path / "photos"), "tasks": ["category", "recipe"]})
    module.setup("fit")
    module.setup("predict")
    assert module.predict_dataset.cluster_ids is not None and len(module.predict_dataset.cluster_ids) == 2
    batch = demo_format()([module.predict_dataset[0], module.predict_dataset[1]])
    assert batch.cluster_ids.tolist() == module.predict_dataset.cluster_ids
