"""Questions about the user's own images, for ``python -m rode_lightning predict``.

Input is either a folder of images (every image is asked the questions of ``tasks``) or a JSON / JSONL file of
requests, each ``{"image": path, "task": name}`` or ``{"image": path, "question": free text}`` (paths relative to the
file's folder), optionally with an ``"id"``. An image that cannot be read is reported and skipped, never fatal for
the others; a malformed request is an error naming the file and line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from rode_lightning.conventions import TASKS
from rode_lightning.data.errors import DataFormatError, SkipCounter
from rode_lightning.data.conversation import Conversation, single_turn
from rode_lightning.data.prompts import QUESTIONS
from rode_lightning.user_errors import MissingFileError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class PredictionRequest:
    id: str
    image: str
    question: str
    task: str | None  # None for a free question: nothing to parse in the answer


def read_prediction_requests(source: str | Path, tasks: list[str]) -> list[PredictionRequest]:
    source = Path(source)
    if source.is_dir():
        images = sorted(path for path in source.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DataFormatError(f"data.predict.source: the folder {source} holds no image "
                                  f"(expected files ending in {', '.join(IMAGE_SUFFIXES)})")
        return [PredictionRequest(f"{path.relative_to(source).as_posix()}#{task}", str(path), QUESTIONS[task][0], task)
                for path in images for task in tasks]
    if not source.is_file():
        raise MissingFileError(f"data.predict.source: {source} is neither a folder of images nor a JSON/JSONL file")
    return _read_request_file(source)


def _read_request_file(path: Path) -> list[PredictionRequest]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataFormatError(f"{path}: not UTF-8 text (byte {error.start}): expected a JSON/JSONL file") from None
    if path.suffix.lower() == ".json":
        try:
            entries = list(enumerate(json.loads(text), start=1))
        except (json.JSONDecodeError, TypeError) as error:
            raise DataFormatError(f"{path}: expected a JSON list of requests ({error})") from None
    else:
        entries = []
        for line_number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    entries.append((line_number, json.loads(line)))
                except json.JSONDecodeError as error:
                    raise DataFormatError(f"{path}:{line_number}: malformed JSON: {error.msg}") from None
    requests = []
    for number, entry in entries:
        where = f"{path}:{number}" if path.suffix.lower() != ".json" else f"{path}, request {number}"
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            raise DataFormatError(f"{where}: expected an object with an 'image' path and a 'task' or 'question'")
        task, question = entry.get("task"), entry.get("question")
        if task is not None and task not in TASKS:
            raise DataFormatError(f"{where}: unknown task {task!r}; expected one of {', '.join(TASKS)}")
        if task is None and not (isinstance(question, str) and question.strip()):
            raise DataFormatError(f"{where}: give a 'task' ({', '.join(TASKS)}) or a non-empty 'question'")
        image = Path(entry["image"])
        image = image if image.is_absolute() else path.parent / image
        requests.append(PredictionRequest(str(entry.get("id", f"{number}")), str(image),
                                          question if question else QUESTIONS[task][0], task))
    if not requests:
        raise DataFormatError(f"{path}: no requests")
    return requests


def drop_unreadable_images(requests: list[PredictionRequest], skipped: SkipCounter) -> list[PredictionRequest]:
    """Keeps requests whose image PIL can fully decode; each bad image is counted once per request."""
    readable: dict[str, bool] = {}
    kept = []
    for request in requests:
        if request.image not in readable:
            try:
                with Image.open(request.image) as image:
                    image.load()
                readable[request.image] = True
            except (OSError, UnidentifiedImageError, ValueError):
                readable[request.image] = False
        if readable[request.image]:
            kept.append(request)
        else:
            skipped[f"predict: unreadable image {request.image}"] += 1
    return kept


class PredictionDataset(Dataset):
    """One conversation to answer per request: the image and the question, no reference answer."""

    def __init__(self, requests: list[PredictionRequest]):
        self.requests = requests
        self.cluster_ids: list[int] | None = None  # set by the data module for MoCLE routing

    def __len__(self) -> int:
        return len(self.requests)

    def __getitem__(self, index: int) -> Conversation:
        request = self.requests[index]
        with Image.open(request.image) as image:
            rgb = image.convert("RGB")
        return single_turn(rgb, request.question, None, id=request.id, dataset="predict", task=request.task,
                           cluster_id=self.cluster_ids[index] if self.cluster_ids is not None else None,
                           image_path=request.image)
