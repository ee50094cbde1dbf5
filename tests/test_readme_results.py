"""README.md's demo results are rendered from results/demo/*.json by scripts/demo_results.py, never typed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_readme_tables_are_the_rendering_of_the_committed_results():
    completed = subprocess.run([sys.executable, "scripts/demo_results.py", "check"], cwd=REPO, capture_output=True,
                               text=True)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_committed_results_record_their_command_and_library_versions():
    for name, subcommand in (("fit", "fit"), ("test", "test"), ("base", "test")):
        record = json.loads((REPO / "results" / "demo" / f"{name}.json").read_text())
        command = record["provenance"]["command"]
        assert command.startswith(f"python -m rode_lightning {subcommand} --config configs/demo.yaml"), command
        assert ("--model.adapter_path" in command) == (name == "test")
        assert {"torch", "transformers", "lightning", "open_clip_torch"} <= set(record["provenance"]["versions"])
        assert record["floors"] and record["results"]


def test_rendering_restores_a_hand_edited_number():
    """A typed change inside a generated block is what `check` refuses and `render` undoes."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import demo_results
    finally:
        sys.path.pop(0)
    text = (REPO / "README.md").read_text()
    row = next(line for line in demo_results.blocks()["validation"].splitlines() if line.startswith("| unifood |"))
    assert row in text
    edited = text.replace(row, row.replace("| unifood | ", "| unifood | 1", 1), 1)
    assert edited != text and demo_results.rendered(edited) == text
