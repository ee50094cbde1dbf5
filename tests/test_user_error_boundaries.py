"""Where a library (or Python's decoder) refuses a user's file, the package says so as a UserError naming the file,
so that the command line reports it in one line; and a method that trains nothing is a bug, raised as one."""

from __future__ import annotations

import pytest
from torch import nn

from rode_lightning.user_errors import UserError

NOT_UTF8 = b'{"image": "a.png", "question": "caf\xe9?"}\n'


def test_a_predict_request_file_that_is_not_utf8_is_named(tmp_path):
    from rode_lightning.data.predict import read_prediction_requests

    path = tmp_path / "requests.jsonl"
    path.write_bytes(NOT_UTF8)
    with pytest.raises(UserError, match=r"requests.jsonl: not UTF-8 text \(byte \d+\)"):
        read_prediction_requests(path, ["category"])


def test_a_vocabulary_that_is_not_utf8_is_named(tmp_path):
    from rode_lightning.metrics.vocabulary import IngredientVocabulary

    path = tmp_path / "vocabulary.json"
    path.write_bytes(b'{"cheese": ["ch\xe8vre"]}')
    with pytest.raises(UserError, match=r"vocabulary.json: not UTF-8 text"):
        IngredientVocabulary.from_file(path)


def test_a_unifood_annotation_file_that_is_not_utf8_is_named(demo_root, tmp_path):
    import shutil

    from rode_lightning.data.datasets.unifood.reader import read_unifood_split

    root = tmp_path / "unifood"
    shutil.copytree(demo_root, root)
    (root / "annotations" / "train.jsonl").write_bytes(NOT_UTF8)
    with pytest.raises(UserError, match=r"train.jsonl: not UTF-8 text"):
        read_unifood_split(root, "train")


def test_a_tokenizer_folder_transformers_cannot_read_is_named(tmp_path):
    from rode_lightning.data.tokenizer import load_tokenizer

    (tmp_path / "tokenizer.json").write_text("{ not a tokenizer")
    with pytest.raises(UserError, match=f"model.tokenizer: transformers cannot read a tokenizer from {tmp_path}"):
        load_tokenizer(str(tmp_path))


def test_a_saved_dataset_datasets_cannot_read_is_named(tmp_path, monkeypatch):
    import datasets

    from rode_lightning.data.datasets.huggingface.files import clear_dataset_cache, load_saved, split_dataset

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    clear_dataset_cache()

    (tmp_path / "dataset_info.json").write_text("{ truncated")
    (tmp_path / "state.json").write_text("{ truncated")
    with pytest.raises(UserError, match=f"{tmp_path}: datasets cannot read this saved dataset"):
        load_saved(str(tmp_path))
    broken = tmp_path / "part.parquet"
    broken.write_bytes(b"PAR1 not really")
    with pytest.raises(UserError, match="datasets cannot read its parquet files"):
        split_dataset(str(tmp_path), "train", (str(broken),))


def test_a_method_whose_layers_hold_no_adapter_parameter_is_a_bug(registry):
    from rode_lightning.adapters import AdapterConfig, AdapterMethod, add_adapters, register_method

    class Opaque(AdapterMethod):
        name = "opaque"
        summary = "a test's method that wraps the layer in a module of its own kind"

        def adapt(self, base, config, context, cluster_dim):
            return nn.Sequential(base, nn.Linear(base.out_features, base.out_features))

    register_method(Opaque())
    model = nn.Sequential()
    model.add_module("q_proj", nn.Linear(4, 4))
    with pytest.raises(RuntimeError, match="adapter method 'opaque' adapted 1 layers but created no parameter"):
        add_adapters(model, AdapterConfig(method="opaque", ranks=[2], target_modules=["q_proj"]))
