"""The data module's grouped settings: which tasks are asked, MoCLE's instruction clusters, ``predict``'s input.

Groups rather than flat keys keep the data module's constructor short (``data.tasks.train`` next to
``data.tasks.eval``); LightningCLI documents and checks each field (``--print_config``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rode_lightning.conventions import SERVED_TASKS, TASKS
from rode_lightning.user_errors import UserError


def _all_tasks() -> list[str]:
    return list(SERVED_TASKS)


def _food_tasks() -> list[str]:
    return list(TASKS)


@dataclass
class TaskSelection:
    """Which tasks are asked.

    Args:
        train: the tasks trained on, where a sample's labels serve them.
        eval: the tasks validated and tested (metrics per dataset and task).
    """

    train: list[str] = field(default_factory=_all_tasks)
    eval: list[str] = field(default_factory=_all_tasks)


@dataclass
class ClusterOptions:
    """Instruction clusters for MoCLE routing.

    Args:
        count: how many; set from ``model.adapter`` by the command line (``null`` unless the method is ``cluster``).
        encoder: sentence encoder for the clustering: ``minilm`` (optional package), ``tfidf``, or ``auto``.
        saved: a directory holding a saved instruction clusterer (a cluster adapter's, written at the end of
            ``fit``): ``predict`` places its questions with it instead of clustering the training data again. The
            command line sets it from ``model.adapter_path`` when that adapter has one.
    """

    count: int | None = None
    encoder: Literal["auto", "minilm", "tfidf"] = "auto"
    saved: str | None = None


@dataclass
class PredictOptions:
    """What ``predict`` answers.

    Args:
        source: a folder of images or a JSON/JSONL file of ``{"image", "task" or "question"}`` requests.
        tasks: for a folder of images, the food tasks asked about every image.
    """

    source: str | None = None
    tasks: list[str] = field(default_factory=_food_tasks)


def check_tasks(key: str, tasks: list[str], known: tuple[str, ...] = SERVED_TASKS) -> None:
    unknown = [task for task in tasks if task not in known]
    if unknown or not tasks:
        raise UserError(f"{key}: {unknown or 'empty list'} - expected a non-empty subset of {list(known)}")


def as_options(value, kind: type, key: str):
    """A group given as a mapping (a script's, a test's) as its dataclass, an unknown field named."""
    if isinstance(value, kind):
        return value
    if value is None:
        return kind()
    try:
        return kind(**value)
    except TypeError as error:
        raise UserError(f"{key}: {error}") from None
