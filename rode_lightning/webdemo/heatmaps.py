"""The two pictures of which experts answered one question: each adapted layer's mean gate per expert over the
answer (the RoDE paper's Figure 6, for one answer), and, for one layer, the gates at every generated token."""

from __future__ import annotations

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rode_lightning.inference.engine import Answer


def _heatmap(gates: list[list[float]], row_labels: list[str], ranks: list[int] | None, title: str,
             height: tuple[float, float], ylabel: str | None = None) -> Figure:
    """Rows x experts, 0 at the bottom of the colour scale, each expert labelled with its rank; ``height``: inches
    for the frame and per row."""
    experts = len(gates[0])
    figure = Figure(figsize=(max(4.2, 1.8 + 0.5 * experts), height[0] + height[1] * len(gates)), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(gates, aspect="auto", cmap="viridis", vmin=0.0, interpolation="nearest")
    axes.set_xticks(range(experts), _expert_labels(experts, ranks), fontsize=7)
    axes.set_yticks(range(len(gates)), row_labels, fontsize=6)
    axes.set_xlabel("expert", fontsize=8)
    if ylabel:
        axes.set_ylabel(ylabel, fontsize=8)
    axes.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axes, shrink=0.9)
    figure.tight_layout()
    return figure


def layers_figure(answer: Answer, ranks: list[int] | None = None) -> Figure | None:
    """Adapted layers x experts, each cell the expert's mean gate over the generated tokens; ``None`` without
    routers (plain LoRA)."""
    if not answer.routing:
        return None
    layers = list(answer.routing)
    return _heatmap([answer.routing[layer] for layer in layers], layers, ranks, "mean gate over the answer", (1.2, 0.22))


def tokens_figure(answer: Answer, layer: str, ranks: list[int] | None = None) -> Figure | None:
    """Generated tokens x experts for ``layer``: the gates at the position that produced each token."""
    rows = answer.token_routing.get(layer)
    if not rows:
        return None
    labels = [repr(token)[1:-1] or "·" for token in answer.tokens] if len(answer.tokens) == len(rows) else [
        str(index) for index in range(len(rows))]
    return _heatmap(rows, labels, ranks, f"gates per token, {layer}", (1.4, 0.2), ylabel="generated token")


def _expert_labels(experts: int, ranks: list[int] | None) -> list[str]:
    if ranks and len(ranks) == experts:
        return [f"e{index} r{rank}" for index, rank in enumerate(ranks)]
    return [f"e{index}" for index in range(experts)]
