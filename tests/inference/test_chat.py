"""``python -m rode_lightning chat``: questions about one photo, task commands with the parsed values, the experts
line, image changes and mistakes, on the demo configuration (a tiny random model) and a trained adapter."""

from __future__ import annotations

import pytest
from PIL import Image

from rode_lightning.cli import run_chat
from rode_lightning.inference.chat import experts_line
from rode_lightning.inference.engine import Answer
from rode_lightning.user_errors import MissingFileError, UserError
from tests.conftest import tiny_cli_args


def test_a_chat_about_a_photo(cli_demo_dir, tmp_path):
    photo, other = tmp_path / "plate.png", tmp_path / "bowl.png"
    Image.new("RGB", (48, 48), (200, 120, 40)).save(photo)
    Image.new("RGB", (64, 40), (20, 120, 200)).save(other)
    written: list[str] = []
    lines = ["What is on this plate?", "", "/task ingredients", "/task cooking", f"/image {other}",
             "/image /nonexistent.png", "/whatever", "/task nutrition", "/quit", "never asked"]
    run_chat([*tiny_cli_args(cli_demo_dir, tmp_path / "logs"), "--image", str(photo)], lines, written.append)
    text = "\n".join(written)
    assert written[0].startswith("ask a question about the image")
    assert text.count("experts (mean gate over the answer and the layers): e0 ") == 3  # three answers, RoDE
    assert "> Which ingredients" in text or "> What" in text
    assert "  ingredients: [" in text and "  nutrition: {" in text
    assert "error: unknown task 'cooking'" in text and "image changed" in text
    assert "error: --image: /nonexistent.png does not exist" in text and "error: unknown command /whatever" in text
    assert "never asked" not in text


def test_chat_mistakes_are_named(cli_demo_dir, tmp_path):
    with pytest.raises(MissingFileError, match="--image: /nonexistent/photo.png does not exist"):
        run_chat([*tiny_cli_args(cli_demo_dir, tmp_path / "logs"), "--image", "/nonexistent/photo.png"], [], print)
    broken = tmp_path / "broken.png"
    Image.new("RGB", (32, 32)).save(broken)
    broken.write_bytes(broken.read_bytes()[:-20])  # cut: PIL would open it, the data readers' check does not
    with pytest.raises(UserError, match="--image: unreadable image: .*broken.png is truncated or corrupt"):
        run_chat([*tiny_cli_args(cli_demo_dir, tmp_path / "logs"), "--image", str(broken)], [], print)
    photo = tmp_path / "photo.png"
    Image.new("RGB", (32, 32)).save(photo)
    with pytest.raises(UserError, match="cluster-routed adapter"):
        run_chat([*tiny_cli_args(cli_demo_dir, tmp_path / "logs"), "--model.adapter.method", "cluster",
                  "--model.adapter.ranks", "[4, 4]", "--image", str(photo)], [], print)


def test_the_experts_line_averages_each_expert_over_the_layers():
    answer = Answer("a", "rice", "stop", 10, 2, routing={"layers.0.q_proj": [0.0, 1.0], "layers.1.q_proj": [0.5, 0.0]})
    assert experts_line(answer) == "experts (mean gate over the answer and the layers): e0 0.250, e1 0.500"
    assert experts_line(Answer("b", "rice", "stop", 10, 2)) == ""


def test_python_dash_m_rode_lightning_chat_reads_stdin(cli_demo_dir, tmp_path, monkeypatch, capsys):
    import io

    from rode_lightning.cli import run_command_line

    photo = tmp_path / "photo.png"
    Image.new("RGB", (32, 32), (90, 90, 20)).save(photo)
    monkeypatch.setattr("sys.stdin", io.StringIO("/task category\n/quit\n"))
    run_command_line(["chat", *tiny_cli_args(cli_demo_dir, tmp_path / "logs"), "--image", str(photo)])
    out = capsys.readouterr().out
    assert "> What" in out and "  category: " in out


def test_a_cluster_adapter_carries_its_clusterer_to_predict_and_chat(cli_demo_dir, tmp_path):
    """fit saves MoCLE's instruction clusterer beside the adapter; predict with that adapter places its questions
    with it and reads no training data (a fresh, empty demo folder stays empty); chat routes with it too."""
    import json

    from rode_lightning.cli import main
    from rode_lightning.data.clusters import CLUSTERS_CONFIG, InstructionClusters

    cluster = ["--model.adapter.method", "cluster", "--model.adapter.num_clusters", "4",
               "--model.adapter.ranks", "[4, 4]"]
    logs = tmp_path / "logs"
    fit = main(["fit", *tiny_cli_args(cli_demo_dir, logs, *cluster, "--trainer.limit_train_batches", "2",
                                      "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0",
                                      "--data.clusters.encoder", "tfidf")])
    adapter = logs / "demo" / "version_0" / "adapter"
    assert (adapter / CLUSTERS_CONFIG).is_file()
    saved = InstructionClusters.load(adapter)
    questions = ["What is on this plate?", "List the ingredients of this dish.", "How many calories?"]
    assert saved.assign(questions).tolist() == fit.datamodule.instruction_clusters.assign(questions).tolist()

    Image.new("RGB", (48, 48), (10, 10, 200)).save(tmp_path / "dish.png")
    requests = tmp_path / "requests.jsonl"
    requests.write_text("".join(json.dumps({"id": str(index), "image": "dish.png", "question": question}) + "\n"
                                for index, question in enumerate(questions)))
    empty = tmp_path / "no_data"
    empty.mkdir()
    predicted = main(["predict", *tiny_cli_args(empty, logs, *cluster), "--model.adapter_path", str(adapter),
                      "--data.predict.source", str(requests)])
    assert predicted.datamodule.cluster_options.saved == str(adapter)
    assert predicted.datamodule.predict_dataset.cluster_ids == saved.assign(questions).tolist()
    assert list(empty.iterdir()) == []  # no training data generated or read
    answers = [json.loads(line) for line in (adapter.parent / "predict" / "predictions.jsonl").read_text().splitlines()]
    assert sorted(answer["id"] for answer in answers) == ["0", "1", "2"]

    written: list[str] = []
    run_chat([*tiny_cli_args(empty, logs, *cluster), "--model.adapter_path", str(adapter),
              "--image", str(tmp_path / "dish.png")], ["What is on this plate?", "/quit"], written.append)
    assert "experts (mean gate over the answer and the layers): e0 " in "\n".join(written)
