"""The two pictures of which experts answered one question: each adapted layer's mean gate per expert over the
answer (the RoDE paper's Figure 6, for one answer), and, for one layer, the gates at every generated token."""

from __future__ import annotations

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rode_lightning.inference.engine import Answer


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def layers_figure(answer: Answer, ranks: list[int] | None = None) -> Figure | None:
    """Adapted layers x experts, each cell the expert's mean gate over the generated tokens; ``None`` without
    routers (plain LoRA)."""
    if not answer.routing:
        return None
    layers = list(answer.routing)
    gates = [answer.routing[layer] for layer in layers]
    figure = _figure(max(4.2, 1.8 + 0.5 * len(gates[0])), 1.2 + 0.22 * len(layers))
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(gates, aspect="auto", cmap="viridis", vmin=0.0, interpolation="nearest")
    axes.set_xticks(range(len(gates[0])), _expert_labels(len(gates[0]), ranks), fontsize=7)
    axes.set_yticks(range(len(layers)), layers, fontsize=6)
    axes.set_xlabel("expert", fontsize=8)
    axes.set_title("mean gate over the answer", fontsize=9)
    figure.colorbar(image, ax=axes, shrink=0.9)
    figure.tight_layout()
    return figure


def tokens_figure(answer: Answer, layer: str, ranks: list[int] | None = None) -> Figure | None:
    """Generated tokens x experts for ``layer``: the gates at the position that produced each token."""
    rows = answer.token_routing.get(layer)
    if not rows:
        return None
    labels = [repr(token)[1:-1] or "·" for token in answer.tokens] if len(answer.tokens) == len(rows) else [
        str(index) for index in range(len(rows))]
    figure = _figure(max(4.2, 1.8 + 0.5 * len(rows[0])), 1.4 + 0.2 * len(rows))
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(rows, aspect="auto", cmap="viridis", vmin=0.0, interpolation="nearest")
    axes.set_xticks(range(len(rows[0])), _expert_labels(len(rows[0]), ranks), fontsize=7)
    axes.set_yticks(range(len(rows)), labels, fontsize=6)
    axes.set_xlabel("expert", fontsize=8)
    axes.set_ylabel("generated token", fontsize=8)
    axes.set_title(f"gates per token, {layer}", fontsize=9)
    figure.colorbar(image, ax=axes, shrink=0.9)
    figure.tight_layout()
    return figure


def _expert_labels(experts: int, ranks: list[int] | None) -> list[str]:
    if ranks and len(ranks) == experts:
        return [f"e{index} r{rank}" for index, rank in enumerate(ranks)]
    return [f"e{index}" for index in range(experts)]
