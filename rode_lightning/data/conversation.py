"""A sample as the data side gives it: a conversation about one image, in words, before any model spells it.

The data side knows dishes, tasks, questions and answers; how a conversation becomes token ids and pixels depends on
the base model (LLaVA-1.5 repeats ``<image>`` once per patch and writes ``USER: ... ASSISTANT:``; Qwen2-VL has its
own chat template, special tokens and flattened patches). So a dataset yields :class:`Conversation` objects, and the
model's conversation format (``model/formats/``) turns a list of them into a :class:`~rode_lightning.batch.FoodBatch`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from PIL import Image

Role = Literal["user", "assistant"]


@dataclass(frozen=True)
class Turn:
    role: Role
    text: str


@dataclass(frozen=True)
class Conversation:
    """One image and the turns about it; the image comes first, with the first user turn.

    Attributes:
        image: the decoded image (RGB), opened by the dataset so that decoding happens in the data-loader worker.
        turns: user and assistant turns in order, starting with a user turn. A conversation to answer (``predict``)
            ends with a user turn; one with a reference ends with the assistant's answer.
        id: the sample's id.
        dataset: the dataset it comes from.
        task: its food task, or ``None`` for a free question.
        cluster_id: its instruction cluster (MoCLE routing); ``None`` where none was assigned (a ``predict``
            request before the data module placed it).
        image_path: where the image was read from, when it is a file (reported by ``predict``).
    """

    image: Image.Image
    turns: tuple[Turn, ...]
    id: str
    dataset: str
    task: str | None = None
    cluster_id: int | None = 0
    image_path: str | None = None

    def __post_init__(self) -> None:
        if not self.turns or self.turns[0].role != "user":
            raise ValueError(f"conversation {self.id}: the first turn must be the user's, got "
                             f"{[turn.role for turn in self.turns]}")

    @property
    def question(self) -> str:
        """The last user turn: what the answer answers."""
        return next(turn.text for turn in reversed(self.turns) if turn.role == "user")

    @property
    def reference(self) -> str | None:
        """The reference answer (the final assistant turn), ``None`` for a conversation still to be answered."""
        return self.turns[-1].text if self.turns[-1].role == "assistant" else None

    @property
    def prompt_turns(self) -> tuple[Turn, ...]:
        """The turns before the reference answer: what generation continues from."""
        return self.turns[:-1] if self.reference is not None else self.turns


def single_turn(image: Image.Image, question: str, answer: str | None, **metadata) -> Conversation:
    """A one-question conversation, answered (training, evaluation) or not (``predict``)."""
    turns = (Turn("user", question),) + ((Turn("assistant", answer),) if answer is not None else ())
    return Conversation(image=image, turns=turns, **metadata)
