"""``python -m rode_lightning fit --help`` lists every registered adapter method with its own summary: the built-in
ones and one registered by a script before it runs the command line (README.md, "Adding a method")."""

from __future__ import annotations

import pytest

from rode_lightning.adapters import AdapterMethod, register_method
from rode_lightning.adapters.routers import SoftmaxRouter
from rode_lightning.cli import main


class HalfGated(AdapterMethod):
    name = "half_gated"
    summary = "a test's method: 50% of every gate, from a softmax router"

    def make_router(self, config, in_features, context, cluster_dim):
        return SoftmaxRouter(in_features, config.num_experts, context)


class Undocumented(AdapterMethod):
    """Described by its docstring's first line when it sets no summary.

    (Not this line.)
    """

    name = "docstring_only"


def _squeezed(text: str) -> str:
    """``text`` without whitespace: the help formatter wraps lines where it likes (hyphens included)."""
    return "".join(text.split())


def test_fit_help_lists_every_registered_method_with_its_summary(registry, capsys):
    register_method(HalfGated())
    register_method(Undocumented())
    with pytest.raises(SystemExit) as exit:
        main(["fit", "--help"])
    assert exit.value.code == 0
    output = capsys.readouterr().out
    start = output.index("--model.adapter.method METHOD\n")
    entry = _squeezed(output[start:output.index("--model.adapter.ranks", start)])
    assert {"rode", "softmax", "top1", "cluster", "lora", "half_gated", "docstring_only"} <= set(registry)
    for name, method in registry.items():
        assert _squeezed(f"``{name}``: {method.describe()}") in entry, name
    assert _squeezed("``half_gated``: a test's method: 50% of every gate") in entry  # a % as written
    assert _squeezed("``docstring_only``: Described by its docstring's first line when it sets no summary.") in entry
    assert "Notthisline" not in entry
    assert "(type:str,default:rode)" in entry


def test_top_level_help_lists_export_and_merge_and_each_prints_its_usage(capsys):
    from rode_lightning.cli import run_command_line

    with pytest.raises(SystemExit) as exit:
        run_command_line(["--help"])
    assert exit.value.code == 0
    assert "python -m rode_lightning {export,merge} [--help]" in capsys.readouterr().out
    for command in ("export", "merge"):
        run_command_line([command, "--help"])
        usage = capsys.readouterr().out
        assert usage.startswith(f"python -m rode_lightning {command} --config RUN_CONFIG --model.adapter_path "
                                "RUN/adapter --output DIR")
