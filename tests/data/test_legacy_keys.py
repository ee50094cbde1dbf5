"""Old data keys (before ``data.sources``) rewritten to today's form: what each meant, in the new spelling.

The rewriting is pure, so each rule is checked here on mappings and argument lists; ``tests/test_configs.py`` checks
that every file of ``configs/`` parses to the same configuration in both spellings.
"""

from __future__ import annotations

import pytest
import yaml

from rode_lightning.data.legacy_keys import rewrite_arguments, rewrite_data_section, sources_from_legacy
from rode_lightning.user_errors import UserError


def test_roots_become_sources_in_the_order_of_the_old_keys_and_datasets_filters_them():
    legacy = {"datasets": ["food101", "unifood"], "unifood_root": "/u", "food101_root": "/f", "vireo172_root": "/v"}
    assert sources_from_legacy(legacy) == [{"dataset": "food101", "root": "/f"}, {"dataset": "unifood", "root": "/u"}]
    assert sources_from_legacy({"unifood_root": "/u", "vireo172_root": "/v"}) == [
        {"dataset": "unifood", "root": "/u"}, {"dataset": "vireo172", "root": "/v"}]


def test_no_root_is_the_demo_and_the_default_demo_leaves_sources_unset():
    assert sources_from_legacy({"datasets": None}) is None
    assert sources_from_legacy({"datasets": ["unifood", "nutrition5k"]}) is None
    assert sources_from_legacy({"datasets": ["food101"]}) == [{"dataset": "food101"}]


def test_a_listed_dataset_without_its_root_is_refused_as_before():
    with pytest.raises(UserError, match="data.datasets lists 'nutrition5k', which has no data"):
        sources_from_legacy({"datasets": ["unifood", "nutrition5k"], "unifood_root": "/u"})


def test_huggingface_blocks_become_sources_with_their_columns_as_options():
    block = {"path": "/hf", "name": "mine", "image": "photo", "category": "label"}
    assert sources_from_legacy({"huggingface": [block], "sampling_weights": {"mine": 2.0, "mine/recipe": 0.5}}) == [
        {"dataset": "huggingface", "root": "/hf", "name": "mine", "options": {"image": "photo", "category": "label"},
         "weight": 2.0, "task_weights": {"recipe": 0.5}}]


def test_weights_fraction_and_demo_sizes_go_to_the_sources_they_concern():
    legacy = {"sampling_weights": {"nutrition5k": 3.0}, "val_fraction": 0.2, "demo_seed": 7,
              "demo_train_size": 16, "demo_eval_size": 4, "demo_nutrition5k_size": 40}
    assert sources_from_legacy(legacy) == [
        {"dataset": "unifood", "weight": 1.0, "val_fraction": 0.2, "demo_seed": 7,
         "demo_sizes": {"train": 16, "val": 4, "test": 4}},
        {"dataset": "nutrition5k", "weight": 3.0, "val_fraction": 0.2, "demo_seed": 7,
         "demo_sizes": {"train": 32, "test": 8}}]


def test_an_old_filter_after_a_new_style_list_filters_that_list():
    base = [{"dataset": "unifood", "root": "/u"}, {"dataset": "nutrition5k", "root": "/n"}]
    assert sources_from_legacy({"datasets": ["nutrition5k"]}, base) == [{"dataset": "nutrition5k", "root": "/n"}]
    small = [{"dataset": "unifood", "demo_sizes": {"train": 16, "val": 4, "test": 4}}]
    assert sources_from_legacy({"demo_eval_size": 3}, small) == [
        {"dataset": "unifood", "demo_sizes": {"train": 16, "val": 3, "test": 3}}]


def test_flat_keys_move_into_their_groups_and_ignored_keys_are_dropped():
    data, found = rewrite_data_section({"train_tasks": ["recipe"], "eval_tasks": ["category"], "num_clusters": 4,
                                        "cluster_encoder": "tfidf", "instruction_clusters": "/a",
                                        "predict_source": "/p", "predict_tasks": ["recipe"], "tokenizer": "demo",
                                        "batch_size": 2})
    assert data == {"batch_size": 2, "tasks": {"train": ["recipe"], "eval": ["category"]},
                    "clusters": {"count": 4, "encoder": "tfidf", "saved": "/a"},
                    "predict": {"source": "/p", "tasks": ["recipe"]}}
    assert len(found) == 8
    assert rewrite_data_section({"sources": None, "batch_size": 2}) == ({"sources": None, "batch_size": 2}, [])


def test_arguments_merge_old_keys_of_files_and_flags_into_one_sources_flag(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"data": {"unifood_root": "/u", "nutrition5k_root": "/n",
                                               "train_tasks": ["recipe"], "batch_size": 2}}))
    args, warnings = rewrite_arguments(["fit", "--config", str(config), "--data.datasets", "[unifood]",
                                        "--data.predict_source=/p", "--trainer.max_steps", "3"])
    copy = args[2]
    assert copy != str(config) and yaml.safe_load(open(copy)) == {"data": {"batch_size": 2,
                                                                           "tasks": {"train": ["recipe"]}}}
    assert args[3:] == ["--data.sources=[{dataset: unifood, root: /u}]", "--data.predict.source", "/p",
                        "--trainer.max_steps", "3"]
    assert warnings[0] == f"--config {config}: data.nutrition5k_root, data.train_tasks, data.unifood_root"
    assert warnings[-1] == "read as data.sources: [{dataset: unifood, root: /u}]"


def test_arguments_without_old_keys_are_left_as_they_are(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("data:\n  sources: [{dataset: unifood, root: /u}]\n")
    args = ["fit", "--config", str(config), "--data.batch_size", "2"]
    assert rewrite_arguments(args) == (args, [])
    assert rewrite_arguments(["--config", str(config)], config_files=False) == (["--config", str(config)], [])


def test_old_roots_replace_or_join_a_configured_list_and_a_later_new_list_replaces_old_keys(tmp_path):
    base = [{"dataset": "unifood", "root": "/u"}, {"dataset": "recipe1m", "root": "/r"}]
    assert sources_from_legacy({"unifood_root": "/mine", "food101_root": "/f"}, base) == [
        {"dataset": "unifood", "root": "/mine"}, {"dataset": "recipe1m", "root": "/r"},
        {"dataset": "food101", "root": "/f"}]
    config = tmp_path / "old.yaml"
    config.write_text("data:\n  unifood_root: /u\n")
    args, _ = rewrite_arguments(["fit", "-c", str(config), "--data.sources", "[{dataset: food101, root: /f}]",
                                 "--data.val_fraction", "0.2"])
    assert args[-1] == "--data.sources=[{dataset: food101, root: /f, val_fraction: 0.2}]"


def test_a_flag_is_never_taken_for_a_value_and_a_broken_value_is_named(tmp_path):
    config = tmp_path / "old.yaml"
    config.write_text("data:\n  train_tasks: [recipe]\n")
    args, warnings = rewrite_arguments(["fit", "--print_config", "--config", str(config)])
    assert args[:3] == ["fit", "--print_config", "--config"] and args[3] != str(config) and warnings
    with pytest.raises(UserError, match=r"^--data.sources \[\{dataset: unifood: not a YAML value"):
        rewrite_arguments(["fit", "--data.sources", "[{dataset: unifood", "--data.val_fraction", "0.2"])


def test_a_data_file_with_old_keys_is_rewritten_too(tmp_path):
    data = tmp_path / "data.yaml"
    data.write_text("unifood_root: /u\nbatch_size: 2\n")
    args, _ = rewrite_arguments(["fit", "--data", str(data)])
    assert yaml.safe_load(open(args[2])) == {"batch_size": 2}
    assert args[3] == "--data.sources=[{dataset: unifood, root: /u}]"


def test_weights_of_a_dataset_not_served_are_refused_as_before():
    with pytest.raises(UserError, match="data.sampling_weights: unknown key 'recipe1m'"):
        sources_from_legacy({"unifood_root": "/u", "sampling_weights": {"recipe1m": 2.0}})


def test_only_the_last_list_of_sources_reaches_the_parser(tmp_path):
    """jsonargparse merges two lists of sources of one length entry by entry: a later list of demo sources would
    keep the roots of an earlier one. Every list but the last is taken out of the command line."""
    config = tmp_path / "run.yaml"
    config.write_text("data:\n  sources: [{dataset: unifood, root: /u}, {dataset: nutrition5k, root: /n}]\n"
                      "  batch_size: 2\n")
    later = "[{dataset: unifood}, {dataset: nutrition5k}]"
    args, warnings = rewrite_arguments(["fit", "--config", str(config), "--data.sources", "[{dataset: food101}]",
                                        "--data.sources", later])
    assert yaml.safe_load(open(args[2])) == {"data": {"batch_size": 2}} and not warnings
    assert args[3:] == ["--data.sources", later]
    assert rewrite_arguments(["fit", "--config", str(config)]) == (["fit", "--config", str(config)], [])


def test_the_command_line_serves_a_later_list_of_demo_sources_without_the_config_s_roots(tmp_path):
    from rode_lightning.cli import parse_fit_arguments

    config = tmp_path / "run.yaml"
    config.write_text("data:\n  sources: [{dataset: unifood, root: /u}, {dataset: nutrition5k, root: /n}]\n")
    data = parse_fit_arguments(["--config", str(config), "--data.sources",
                                "[{dataset: unifood}, {dataset: nutrition5k}]"]).as_dict()["data"]
    assert [source["root"] for source in data["sources"]] == [None, None]
