"""When progress bars show: a terminal on rank 0 only."""

from __future__ import annotations

import io
import sys

from lightning.fabric.utilities.rank_zero import rank_zero_only

from rode_lightning.data.datasets.unifood.demo import generate_demo_unifood
from rode_lightning.progress import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_shows_on_a_terminal_and_passes_every_item(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    assert list(progress(range(5), "reading Uni-Food train", "record")) == [0, 1, 2, 3, 4]
    assert "reading Uni-Food train" in terminal.getvalue() and "/5 " in terminal.getvalue()  # it knows the total


def test_no_bar_off_a_terminal_or_off_rank_zero(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # a log file, CI, captured output
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    assert list(progress(range(3), "quiet", "item")) == [0, 1, 2]
    assert sys.stdout.getvalue() == ""

    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    generate_demo_unifood(tmp_path / "demo", splits={"train": 3})  # long work, with its bar, on rank 1: silent
    assert terminal.getvalue() == ""
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    generate_demo_unifood(tmp_path / "demo2", splits={"train": 3})
    assert "generating demo Uni-Food train" in terminal.getvalue()
