"""README.md's demo and benchmark results are rendered from results/ by scripts/demo_results.py and
scripts/benchmark_results.py, never typed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_readme_tables_are_the_rendering_of_the_committed_results(capsys):
    # In this process (the scripts' `check` action calls the same function): a fresh interpreter costs ~10 s here.
    assert _script("demo_results").check() == 0, capsys.readouterr().out


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


def _script(name: str):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


def test_readme_benchmark_blocks_are_the_rendering_of_the_committed_output(capsys):
    script = _script("benchmark_results")
    assert script.readme_blocks.check(script.KIND, script.blocks, "render") == 0, capsys.readouterr().out


def test_readme_quantized_memory_table_is_the_rendering_of_the_committed_estimates(capsys):
    script = _script("quantization_memory")
    assert script.readme_blocks.check(script.KIND, script.blocks, "render") == 0, capsys.readouterr().out
    rows = json.loads(script.RESULT.read_text())["rows"]
    assert {(row["base"], row["scheme"]) for row in rows} == {(base, scheme) for base in script.BASES
                                                              for scheme in script.SCHEMES}
    for row in rows:  # each row's command is the one the script runs for its base and scheme
        assert row["command"].split()[3:] == [*script.BASES[row["base"]], *script.SCHEMES[row["scheme"]]]
    bf16 = {row["base"]: row["memory_gib"]["frozen_weights"] for row in rows if row["scheme"] == "bf16"}
    assert all(row["memory_gib"]["frozen_weights"] < bf16[row["base"]] for row in rows if row["scheme"] != "bf16")


def test_benchmark_output_records_the_commands_that_made_it():
    benchmark_results = _script("benchmark_results")
    record = json.loads((REPO / "results" / "benchmarks" / "provenance.json").read_text())
    assert record["commands"] == {name: "python " + " ".join(arguments)
                                  for name, arguments in benchmark_results.COMMANDS.items()}
    assert {"torch", "transformers", "peft"} <= set(record["versions"])
    speed = benchmark_results.last_json((REPO / "results" / "benchmarks" / "adapter_speed.txt").read_text())
    assert speed["rounds"] == 15 and speed["dtype"] == "float32"  # the recorded command's settings


def test_benchmark_rendering_restores_a_hand_edited_ratio():
    benchmark_results, readme_blocks = _script("benchmark_results"), _script("readme_blocks")
    text = (REPO / "README.md").read_text()
    generated = benchmark_results.blocks()
    row = next(line for line in generated["adapter_speed"].splitlines() if line.startswith("| fused RoDE"))
    assert row in text
    edited = text.replace(row, row.replace("| 0", "| 9").replace("| 1", "| 9"), 1)
    assert edited != text and readme_blocks.rendered(edited, "benchmark-results", generated) == text


def test_a_missed_target_is_rendered_as_missed():
    benchmark_results = _script("benchmark_results")
    assert benchmark_results._verdict(1.2, at_most=1.15) == "1.20 (<= 1.15 missed)"
    assert benchmark_results._verdict(0.91, at_least=0.9) == "0.91 (>= 0.9 met)"
    assert benchmark_results._verdict(0.5) == "0.50" and benchmark_results._verdict(None) == ""
