"""The split-wide router statistics (``router_<stage>.json`` and ``.png``) are written complete or absent: a write cut
halfway leaves the previous file and no temporary one."""

from __future__ import annotations

import json
import pathlib
from types import SimpleNamespace

import pytest
import torch

from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.adapters.context import RoutingContext
from rode_lightning.adapters.inject import adapter_layers, inject_adapters
from rode_lightning.callbacks.router_heatmaps import EvaluationRouting, router_heatmap_figure
from rode_lightning.callbacks.router_sparsity import RouterSparsityMonitor, write_router_files


class WriteCutShort(RuntimeError):
    pass


def _router(gate: float) -> dict:
    return {"layers": ["layers.0.q_proj"], "ranks": [2, 4],
            "groups": {"recipe": {"mean_gate": [[gate, 1 - gate]], "sparsity": 0.5, "tokens": 3}}}


def _files(directory: pathlib.Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in directory.iterdir()}


def test_a_figure_cut_halfway_keeps_the_previous_figure(tmp_path):
    write_router_files(tmp_path, "val", _router(0.1), router_heatmap_figure(_router(0.1), "first"))
    before = _files(tmp_path)
    assert set(before) == {"router_val.json", "router_val.png"} and before["router_val.png"].startswith(b"\x89PNG")
    assert json.loads(before["router_val.json"]) == _router(0.1)

    figure = router_heatmap_figure(_router(0.7), "second")
    real_savefig = figure.savefig

    def savefig_half(path, **kwargs):  # the disk fills up halfway through the image
        real_savefig(path, **kwargs)
        data = pathlib.Path(path).read_bytes()
        pathlib.Path(path).write_bytes(data[: len(data) // 2])
        raise WriteCutShort

    figure.savefig = savefig_half
    with pytest.raises(WriteCutShort):
        write_router_files(tmp_path, "val", _router(0.7), figure)
    after = _files(tmp_path)
    assert set(after) == {"router_val.json", "router_val.png"}  # no partial file left behind
    assert after["router_val.png"] == before["router_val.png"]
    assert json.loads(after["router_val.json"]) == _router(0.7)  # written, whole, before the figure


def test_statistics_cut_halfway_keep_the_previous_statistics(tmp_path, monkeypatch):
    write_router_files(tmp_path, "test", _router(0.2), router_heatmap_figure(_router(0.2), "first"))
    before = _files(tmp_path)
    real_write_text = pathlib.Path.write_text

    def write_half(self, text, *args, **kwargs):
        real_write_text(self, text[: len(text) // 2], *args, **kwargs)
        raise WriteCutShort

    monkeypatch.setattr(pathlib.Path, "write_text", write_half)
    with pytest.raises(WriteCutShort):
        write_router_files(tmp_path, "test", _router(0.9), router_heatmap_figure(_router(0.9), "second"))
    monkeypatch.undo()
    assert _files(tmp_path) == before
    assert json.loads((tmp_path / "router_test.json").read_text()) == _router(0.2)


def test_the_end_of_an_evaluation_writes_both_files_into_the_results_folder(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8))
    inject_adapters(model, AdapterConfig(ranks=[2, 4], dropout=0.0, target_modules=["0"]), RoutingContext())
    layers = adapter_layers(model)
    monitor = RouterSparsityMonitor()
    monitor._evaluation_layers = layers
    monitor._evaluation = EvaluationRouting({name: 2 for name in layers}, ["recipe"])
    model(torch.randn(1, 3, 8))
    monitor._evaluation.add({name: layer.last_gates for name, layer in layers.items()}, torch.ones(1, 3),
                            [["recipe"]])
    one_process = SimpleNamespace(root_device=torch.device("cpu"), reduce=lambda value, reduce_op: value)
    trainer = SimpleNamespace(strategy=one_process, log_dir=str(tmp_path), is_global_zero=True, loggers=[],
                              global_step=3)
    monitor._end_evaluation(trainer, "val")
    results = tmp_path / "results"
    assert sorted(path.name for path in results.iterdir()) == ["router_val.json", "router_val.png"]
    assert json.loads((results / "router_val.json").read_text())["groups"]["recipe"]["tokens"] == 3
    assert (results / "router_val.png").read_bytes().startswith(b"\x89PNG")
