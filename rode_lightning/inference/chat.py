"""``python -m rode_lightning chat``: questions about one image in a terminal, for a quick look at a trained model
(over SSH, without a browser).

    python -m rode_lightning chat --config configs/demo.yaml --model.adapter_path logs/demo/version_0/adapter \\
        --image photo.jpg

Each line is a question about the image; ``/task ingredients`` (or ``category``, ``recipe``, ``nutrition``) asks
that task's question and prints what the parser read from the answer; ``/image PATH`` changes the image; ``/quit``
or end of input ends. After each answer a line shows which experts answered: each expert's mean gate over the
generated tokens, averaged over the adapted layers (RoDE's ReLU gates: 0 is an expert that was not used).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from PIL import Image

from rode_lightning.data.errors import DataFormatError
from rode_lightning.data.images import check_image
from rode_lightning.data.prompts import QUESTIONS
from rode_lightning.inference.engine import Answer, InferenceEngine, Request
from rode_lightning.user_errors import MissingFileError, UserError

HELP = ("ask a question about the image, or /task " + "|".join(QUESTIONS) + ", /image PATH, /quit")


def open_image(path: str | Path) -> Image.Image:
    """The photo at ``path``, checked as the data readers check theirs (``data/images.py``: a truncated file is
    found here, not mid-answer)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"--image: {path} does not exist")
    try:
        check_image(path)
    except DataFormatError as error:
        raise UserError(f"--image: {error}") from None
    with Image.open(path) as image:
        return image.convert("RGB")


def experts_line(answer: Answer) -> str:
    """Each expert's mean gate over the answer, averaged over the adapted layers; empty for plain LoRA."""
    if not answer.routing:
        return ""
    layers = list(answer.routing.values())
    means = [sum(layer[expert] for layer in layers) / len(layers) for expert in range(len(layers[0]))]
    return "experts (mean gate over the answer and the layers): " + ", ".join(
        f"e{expert} {value:.3f}" for expert, value in enumerate(means))


def chat(engine: InferenceEngine, image: Image.Image, lines: Iterable[str], write: Callable[[str], None]) -> None:
    """Answer each of ``lines`` about ``image`` (commands as in the module docstring), writing to ``write``."""
    write(HELP)
    for turn, line in enumerate(lines):
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            break
        if line.startswith("/image"):
            try:
                image = open_image(line.removeprefix("/image").strip())
                write("image changed")
            except UserError as error:
                write(f"error: {error}")
            continue
        task, question = None, line
        if line.startswith("/task"):
            task, question = line.removeprefix("/task").strip(), None
            if task not in QUESTIONS:
                write(f"error: unknown task {task!r}; one of {', '.join(QUESTIONS)}")
                continue
            write(f"> {QUESTIONS[task][0]}")
        elif line.startswith("/"):
            write(f"error: unknown command {line.split()[0]}; {HELP}")
            continue
        [answer] = engine.answer([Request(image, question, task, id=f"turn {turn}")])
        write(answer.text + (" [cut at max_new_tokens]" if answer.finish_reason == "length" else ""))
        for name, value in answer.parsed.items():
            write(f"  {name}: {value}")
        experts = experts_line(answer)
        if experts:
            write("  " + experts)
