"""Complete or absent: a write cut short leaves the previous file, and a truncated file is named when read."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

import rode_lightning.adapters.saving as saving
from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.adapters.saving import CONFIG_NAME, WEIGHTS_NAME, load_adapter, save_adapter
import rode_lightning.atomic as atomic
from rode_lightning.atomic import replaced_atomically, write_text_atomically
from rode_lightning.metrics.results import write_results
from tests.adapters.test_saving import trained_like
from tests.model.test_lmm import batch, build


class WriteCutShort(RuntimeError):
    pass


def test_an_error_inside_the_block_leaves_the_previous_file_and_no_temporary_one(tmp_path):
    target = tmp_path / "table.md"
    write_text_atomically(target, "previous\n")
    with pytest.raises(WriteCutShort):
        with replaced_atomically(target) as partial:
            partial.write_text("half of the new")
            raise WriteCutShort
    assert target.read_text() == "previous\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["table.md"]
    write_text_atomically(target, "new\n")
    assert target.read_text() == "new\n" and sorted(path.name for path in tmp_path.iterdir()) == ["table.md"]


def test_an_adapter_save_cut_halfway_keeps_the_previous_adapter_loadable(tmp_path, monkeypatch):
    adapter = AdapterConfig()
    torch.manual_seed(0)
    first = trained_like(build(adapter)).eval()
    save_adapter(first, adapter, tmp_path)
    input_ids, mask, images = batch(first)
    expected = first(input_ids, mask, images)

    second = trained_like(build(adapter))
    real_save = saving.save_file

    def save_half(state, path):  # the disk fills up halfway through the weights
        real_save(state, path)
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
        raise WriteCutShort

    monkeypatch.setattr(saving, "save_file", save_half)
    with pytest.raises(WriteCutShort):
        save_adapter(second, adapter, tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([WEIGHTS_NAME, CONFIG_NAME])

    torch.manual_seed(0)
    target = build(adapter).eval()
    load_adapter(target, adapter, tmp_path)
    torch.testing.assert_close(target(input_ids, mask, images), expected, rtol=0, atol=0)


def test_a_truncated_adapter_is_named_with_what_to_do(tmp_path):
    adapter = AdapterConfig()
    model = build(adapter)
    save_adapter(model, adapter, tmp_path)
    weights = tmp_path / WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError) as error:
        load_adapter(model, adapter, tmp_path)
    assert str(error.value).startswith(f"adapter checkpoint: {weights} is truncated or corrupt")
    assert "save the adapter again" in str(error.value)
    (tmp_path / CONFIG_NAME).write_text('{"format_version": 1, "adap')
    with pytest.raises(ValueError, match=f"{tmp_path / CONFIG_NAME} is not an adapter config"):
        load_adapter(model, adapter, tmp_path)


def test_results_written_again_replace_every_file_whole(tmp_path, monkeypatch):
    write_results(tmp_path, "val", {"unifood": {"ingredient_iou": 0.25}}, [{"id": "a"}], epoch=0, step=1)
    import rode_lightning.metrics.results as results

    def provenance_fails():
        raise WriteCutShort

    monkeypatch.setattr(results, "provenance", provenance_fails)
    with pytest.raises(WriteCutShort):
        write_results(tmp_path, "val", {"unifood": {"ingredient_iou": 0.75}}, [{"id": "b"}], epoch=1, step=2)
    saved = json.loads((tmp_path / "val_results.json").read_text())
    assert saved["results"] == {"unifood": {"ingredient_iou": 0.25}}  # the previous, whole
    assert [path.name for path in tmp_path.iterdir() if "partial" in path.name] == []


def test_a_checkpoint_save_cut_halfway_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """Lightning's checkpoints go through TrainingCheckpointIO: a torch.save that dies halfway (the job preempted
    while last.ckpt is written) leaves the previous last.ckpt, which loads."""
    from rode_lightning.cli import check_checkpoint_path
    from rode_lightning.scale import sharded_checkpoint

    io = sharded_checkpoint.TrainingCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 4, "state_dict": {"w": torch.arange(3.0)}}, path)
    real_save = torch.save

    def save_half(value, file):
        real_save(value, file)
        data = open(file, "rb").read()
        open(file, "wb").write(data[: len(data) // 2])
        raise WriteCutShort

    monkeypatch.setattr(sharded_checkpoint.torch, "save", save_half)
    with pytest.raises(WriteCutShort):
        io.save_checkpoint({"global_step": 8, "state_dict": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert [file.name for file in path.parent.iterdir()] == ["last.ckpt"]
    checkpoint = io.load_checkpoint(path)
    assert checkpoint["global_step"] == 4 and torch.equal(checkpoint["state_dict"]["w"], torch.arange(3.0))

    # A checkpoint truncated some other way (copied in part) is refused before Lightning reads it, naming it.
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=f"--ckpt_path {path} is not a Lightning checkpoint"):
        check_checkpoint_path(str(path))


def test_a_sharded_folder_replaced_keeps_nothing_of_the_previous_one(tmp_path):
    from rode_lightning.scale.strategy import replace_folder

    target, new = tmp_path / "last.ckpt", tmp_path / ".last.ckpt.partial"
    target.mkdir()
    (target / "__0_0.distcp").write_text("old shard")
    (target / "old-only.distcp").write_text("old")
    new.mkdir()
    (new / "__0_0.distcp").write_text("new shard")
    replace_folder(new, target)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["last.ckpt"]
    assert sorted(path.name for path in target.iterdir()) == ["__0_0.distcp"]
    assert (target / "__0_0.distcp").read_text() == "new shard"


@pytest.mark.parametrize("name", ["last", "best", "hpc", "registry:version:v2", "s3://bucket/run/last.ckpt"])
def test_checkpoint_names_lightning_resolves_itself_are_not_taken_for_missing_files(name):
    from rode_lightning.cli import check_checkpoint_path
    from rode_lightning.user_errors import UserError

    if name in ("best", "hpc"):  # known only inside the run that trained: refused as names, not as missing files
        with pytest.raises(UserError, match=f"--ckpt_path {name}: a name Lightning resolves only inside the run"):
            check_checkpoint_path(name)
    else:
        check_checkpoint_path(name)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_every_file_written_gets_the_permissions_of_the_umask(tmp_path, umask, mode):
    """safetensors creates its files 0600 whatever the umask; through atomic.py they get what ``open`` gives."""
    from rode_lightning.pretrain.layout import write_open_clip_checkpoint

    previous = os.umask(umask)
    try:
        save_adapter(torch.nn.Linear(2, 2), AdapterConfig(), tmp_path / "adapter")
        write_text_atomically(tmp_path / "table.md", "written\n")
        write_open_clip_checkpoint(torch.nn.Linear(2, 2), tmp_path / "open_clip_model.safetensors")
        with open(tmp_path / "plain.txt", "w") as handle:  # what a file created without atomic.py gets
            handle.write("plain\n")
    finally:
        os.umask(previous)
    modes = {path.relative_to(tmp_path).as_posix(): stat.S_IMODE(path.stat().st_mode)
             for path in tmp_path.rglob("*") if path.is_file()}
    assert modes == {f"adapter/{WEIGHTS_NAME}": mode, f"adapter/{CONFIG_NAME}": mode, "table.md": mode,
                     "open_clip_model.safetensors": mode, "plain.txt": mode}


def test_the_umask_is_read_and_left_as_it_was_with_or_without_proc(monkeypatch):
    def no_proc(*args, **kwargs):  # a system without /proc/self/status (macOS)
        raise FileNotFoundError("/proc/self/status")

    previous = os.umask(0o027)
    try:
        assert atomic.current_umask() == 0o027
        monkeypatch.setattr(atomic, "open", no_proc, raising=False)
        assert atomic.current_umask() == 0o027
        assert os.umask(0o027) == 0o027  # unchanged by the reading
    finally:
        os.umask(previous)


def test_a_figure_is_saved_in_its_suffix_s_format_complete_or_absent(tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from rode_lightning.atomic import save_figure_atomically

    figure = Figure(figsize=(1, 1))
    FigureCanvasAgg(figure)
    figure.add_subplot().plot([0, 1], [1, 0])
    png, svg = save_figure_atomically(figure, tmp_path / "a.png"), save_figure_atomically(figure, tmp_path / "a.svg")
    assert png.read_bytes().startswith(b"\x89PNG") and b"<svg" in svg.read_bytes()[:500]
    before = png.read_bytes()

    def cut(path, **kwargs):  # the disk fills up halfway through the image
        Path(path).write_bytes(before[: len(before) // 2])
        raise OSError("No space left on device")

    figure.savefig = cut
    with pytest.raises(OSError, match="No space left"):
        save_figure_atomically(figure, png)
    assert png.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a.svg"]
