"""``python -m rode_lightning demo``: a web page (gradio) to ask a trained model about a photo and see which experts
answered.

    python -m rode_lightning demo --config configs/demo.yaml --model.adapter_path logs/demo/version_0/adapter \\
        [--compare logs/grid/lora_r32/seed_0/adapter] [--port 7860]

Upload a photo or pick one of the demo's test photos, choose a task (its standard question, and the answer parsed as
that task's: ingredient list, nutrition table with units, category) or type a question. Each model's column shows
the answer, what the parser read, the experts per adapted layer (mean gate over the answer) and, for a chosen layer,
the gates at every generated token. ``--compare`` puts a second trained adapter (another run's ``adapter``
directory, built with that run's saved ``config.yaml``) beside the first, asked the same question about the same
photo. The page binds 127.0.0.1 unless ``--host 0.0.0.0``; gradio's analytics are off.
"""

from __future__ import annotations

import argparse
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rode_lightning.conventions import NUTRITION_UNITS
from rode_lightning.data.prompts import QUESTIONS
from rode_lightning.inference.engine import Answer, InferenceEngine, Request
from rode_lightning.user_errors import UserError
from rode_lightning.webdemo.heatmaps import layers_figure, tokens_figure

OWN_QUESTION = "my question"


@dataclass
class DemoOptions:
    host: str = "127.0.0.1"
    port: int = 7860
    compare: str | None = None
    examples: list[Path] = field(default_factory=list)


def parse_demo_arguments(args: list[str]) -> tuple[DemoOptions, list[str]]:
    """The page's options, and the rest of ``args`` (the first model's configuration, as for ``test``)."""
    parser = argparse.ArgumentParser(prog="python -m rode_lightning demo", add_help=False)
    parser.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "0.0.0.0", "::"])
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--compare", default=None, help="a second adapter directory, shown beside the first")
    if "-h" in args or "--help" in args:
        print(parser.format_help() + "\nThe model is configured as for test (--config, --model.adapter_path, ...): "
              "python -m rode_lightning test --help")
        raise SystemExit(0)
    known, rest = parser.parse_known_args(args)
    if not 1024 <= known.port <= 65535:
        raise UserError(f"demo --port: {known.port}; expected 1024 to 65535")
    return DemoOptions(known.host, known.port, known.compare), rest


@dataclass
class ShownModel:
    name: str
    engine: InferenceEngine

    @property
    def ranks(self) -> list[int] | None:
        return list(self.engine.module.adapter_config.ranks or []) or None


def parsed_markdown(answer: Answer) -> str:
    """What the task's parser read, for a reader: a list, a table with units, a name."""
    if "ingredients" in answer.parsed:
        found = answer.parsed["ingredients"]
        return "**ingredients read:** " + (", ".join(found) if found else "none")
    if "nutrition" in answer.parsed:
        values = answer.parsed["nutrition"]
        rows = [f"| {NUTRITION_UNITS[name][0]} | {'' if value is None else f'{value:g}'} | {NUTRITION_UNITS[name][1]} |"
                for name, value in values.items() if name in NUTRITION_UNITS]
        return "**nutrition read:**\n\n| nutrient | value | unit |\n|---|---|---|\n" + "\n".join(rows)
    if "category" in answer.parsed:
        return f"**category read:** {answer.parsed['category'] or 'none'}"
    return "(a free question: the text is the answer)"


def build_app(models: list[ShownModel], examples: list[Path]):
    """The gradio page for ``models`` (one or two, side by side)."""
    import gradio as gr

    lock = threading.Lock()  # one question at a time: the model keeps per-batch routing state

    def ask(image, what: str, question: str):
        if image is None:
            raise gr.Error("upload a photo or pick one of the examples first")
        task = None if what == OWN_QUESTION else what
        if task is None and not (question or "").strip():
            raise gr.Error("type a question, or choose a task")
        outputs = []
        for model in models:
            with lock:
                [answer] = model.engine.answer([Request(image.convert("RGB"), question if task is None else None,
                                                        task, id="demo")])
            layers = list(answer.routing)
            chosen = layers[len(layers) // 2] if layers else None
            parsed = parsed_markdown(answer) + ("" if layers else "\n\n*No router (plain LoRA): no experts to show.*")
            outputs += [answer.text + (" [cut at the answer length limit]" if answer.finish_reason == "length" else ""),
                        parsed, layers_figure(answer, model.ranks),
                        gr.Dropdown(choices=layers, value=chosen), tokens_figure(answer, chosen, model.ranks)
                        if chosen else None, answer]
        return outputs

    def redraw(model_index: int):
        def draw(layer: str, answer: Answer | None):
            return tokens_figure(answer, layer, models[model_index].ranks) if answer and layer else None
        return draw

    with gr.Blocks(title="rode_lightning: which experts answered", analytics_enabled=False) as app:
        gr.Markdown("## Ask a trained model about a photo, and see which experts answered")
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(type="pil", label="photo", sources=["upload"], elem_id="photo")
                what = gr.Radio([*QUESTIONS, OWN_QUESTION], value="ingredients", label="ask for",
                                elem_id="task")
                question = gr.Textbox(label="your question (with 'my question')", elem_id="question")
                button = gr.Button("Ask", variant="primary", elem_id="ask")
                if examples:
                    gr.Examples([[str(path)] for path in examples], inputs=[image], label="the demo's test photos")
            outputs, per_model = [], []
            for index, model in enumerate(models):
                with gr.Column(scale=2):
                    gr.Markdown(f"### {model.name}")
                    answer_box = gr.Textbox(label="answer", interactive=False, elem_id=f"answer-{index}")
                    parsed = gr.Markdown(elem_id=f"parsed-{index}")
                    layers_plot = gr.Plot(label="experts per adapted layer", show_label=False, elem_id=f"layers-{index}")
                    layer = gr.Dropdown(label="layer, per generated token", choices=[], elem_id=f"layer-{index}")
                    tokens_plot = gr.Plot(label="experts per generated token", show_label=False, elem_id=f"tokens-{index}")
                    state = gr.State(None)
                outputs += [answer_box, parsed, layers_plot, layer, tokens_plot, state]
                per_model.append((layer, state, tokens_plot))
        button.click(ask, inputs=[image, what, question], outputs=outputs)
        for index, (layer, state, tokens_plot) in enumerate(per_model):
            layer.change(redraw(index), inputs=[layer, state], outputs=[tokens_plot])
    return app


def launch(options: DemoOptions, models: list[ShownModel], block: bool = True):
    """Start the page; ``block=False`` returns the running app (tests), whose ``close()`` stops it."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    app = build_app(models, options.examples)
    app.launch(server_name=options.host, server_port=options.port, prevent_thread_lock=not block,
               show_error=True, quiet=not block)
    return app
