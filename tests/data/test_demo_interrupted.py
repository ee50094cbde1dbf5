"""Demo data complete or absent: a generation killed halfway (Ctrl-C while the first run builds its demo copy) is
never served as it was left; the next run regenerates it, to the same files as an uninterrupted generation."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from rode_lightning.data.datasets import DATASETS


class Interrupted(KeyboardInterrupt):
    pass


def _generators():
    for name, dataset in DATASETS.items():
        yield name, lambda root, write=dataset.write_demo: write(root, 0, None)


def _files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("name, generate", list(_generators()), ids=[name for name, _ in _generators()])
def test_a_generation_cut_halfway_is_regenerated_whole(name, generate, tmp_path, monkeypatch):
    real_save = Image.Image.save
    saved = []

    def save_then_stop(image, *args, **kwargs):
        if len(saved) == 3:
            raise Interrupted
        saved.append(1)
        return real_save(image, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save_then_stop)
    with pytest.raises(Interrupted):
        generate(tmp_path / "cut")
    monkeypatch.undo()

    generate(tmp_path / "cut")
    generate(tmp_path / "whole")
    assert _files(tmp_path / "cut") == _files(tmp_path / "whole")
