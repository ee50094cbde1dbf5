"""The web demo's pieces without a browser: what the parser read, written for a reader; the two heatmaps drawn from an
answer's gates; the options and the --compare run's arguments."""

from __future__ import annotations

import pytest
import yaml

from rode_lightning.cli import saved_run_arguments
from rode_lightning.inference.engine import Answer
from rode_lightning.user_errors import MissingFileError, UserError
from rode_lightning.webdemo.app import parse_demo_arguments, parsed_markdown
from rode_lightning.webdemo.heatmaps import layers_figure, tokens_figure


def answer(**fields) -> Answer:
    return Answer("a", "text", "stop", 10, 2, **fields)


def test_parsed_values_are_written_with_their_units():
    nutrition = parsed_markdown(answer(parsed={"nutrition": {"mass_g": 250.0, "energy_kcal": 410.5, "fat_g": None,
                                                             "carbohydrate_g": 40.0, "protein_g": 12.0}}))
    assert "| mass | 250 | g |" in nutrition and "| energy | 410.5 | kcal |" in nutrition and "| fat |  | g |" in nutrition
    assert parsed_markdown(answer(parsed={"ingredients": ["rice", "egg"]})) == "**ingredients read:** rice, egg"
    assert parsed_markdown(answer(parsed={"ingredients": []})) == "**ingredients read:** none"
    assert parsed_markdown(answer(parsed={"category": "ramen"})) == "**category read:** ramen"
    assert "free question" in parsed_markdown(answer())


def test_the_heatmaps_show_the_gates_they_are_given():
    routing = {"layers.0.q_proj": [0.0, 0.5, 1.0], "layers.1.q_proj": [0.2, 0.0, 0.1]}
    tokens = {"layers.0.q_proj": [[0.0, 1.0, 2.0], [0.0, 0.0, 0.0]], "layers.1.q_proj": [[0.4, 0.0, 0.2], [0, 0, 0]]}
    shown = answer(routing=routing, token_routing=tokens, tokens=["ri", "ce"])
    figure = layers_figure(shown, ranks=[2, 4, 8])
    image = figure.axes[0].images[0]
    assert image.get_array().tolist() == list(routing.values())
    assert [label.get_text() for label in figure.axes[0].get_xticklabels()] == ["e0 r2", "e1 r4", "e2 r8"]
    assert [label.get_text() for label in figure.axes[0].get_yticklabels()] == list(routing)
    per_token = tokens_figure(shown, "layers.1.q_proj")
    assert per_token.axes[0].images[0].get_array().tolist() == tokens["layers.1.q_proj"]
    assert [label.get_text() for label in per_token.axes[0].get_yticklabels()] == ["ri", "ce"]
    assert layers_figure(answer()) is None and tokens_figure(answer(), "layers.0.q_proj") is None  # plain LoRA


def test_demo_options_and_the_compared_runs_arguments(tmp_path):
    options, rest = parse_demo_arguments(["--port", "7999", "--config", "c.yaml", "--compare", "runs/a/adapter"])
    assert (options.port, options.host, options.compare, rest) == (7999, "127.0.0.1", "runs/a/adapter",
                                                                  ["--config", "c.yaml"])
    with pytest.raises(UserError, match="demo --port: 80; expected 1024 to 65535"):
        parse_demo_arguments(["--port", "80"])
    adapter = tmp_path / "run" / "adapter"
    with pytest.raises(MissingFileError, match="is not an adapter directory"):
        saved_run_arguments(str(adapter))
    adapter.mkdir(parents=True)
    with pytest.raises(MissingFileError, match="no config.yaml beside"):
        saved_run_arguments(str(adapter))
    (adapter.parent / "config.yaml").write_text(yaml.safe_dump({"model": {"max_new_tokens": 7}, "ckpt_path": None,
                                                                "weights_only": None, "seed_everything": 3}))
    arguments = saved_run_arguments(str(adapter))
    assert arguments[2:] == ["--model.adapter_path", str(adapter)]
    assert yaml.safe_load(open(arguments[1])) == {"model": {"max_new_tokens": 7}, "seed_everything": 3}
