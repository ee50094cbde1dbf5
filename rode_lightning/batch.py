"""The batch every model of this project takes: one typed object instead of a dict of strings.

A :class:`FoodBatch` is what a conversation format (``model/formats/``) makes of a list of conversations: token ids
in the base model's own spelling, the model's pixel inputs, and per row the masks that say which positions are the
answer and which are the image. It sits on the ground floor because the data loaders carry it, the model reads it,
and the callbacks (router statistics over answer or image tokens) read it too.

Not frozen: Lightning moves a batch to the device by rebuilding dataclasses field by field, which a frozen dataclass
refuses. Tensors whose first dimension is the batch are indexed by row in :meth:`FoodBatch.select`; pixel inputs that
are flattened over the images of the batch (Qwen2-VL's patches) say how many rows each sample owns in
``pixel_rows``, so that selecting rows selects their patches too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

import torch


@dataclass
class FoodBatch:
    """A batch of conversations, spelled for one base model.

    Attributes:
        ids: each sample's id (``<dataset item>`` or a prediction request's id).
        datasets: the dataset each sample comes from (``predict`` for the user's own requests).
        tasks: each sample's task, ``None`` for a free question.
        prompt_ids: the conversation up to where the answer starts, left-padded (generation continues at the right).
        prompt_attention_mask: 1 on the real tokens of ``prompt_ids``.
        pixel_values: the images as the base model takes them (one row per sample, or flattened patches; see
            ``pixel_rows``); ``None`` without images.
        input_ids: the whole conversation, answer included, right-padded; ``None`` where there is no answer
            (``predict``).
        attention_mask: 1 on the real tokens of ``input_ids``.
        labels: ``input_ids`` with every position that is not an answer token set to the ignore index.
        answer_mask: 1 where ``input_ids`` holds a token of the answer (what the loss is computed on).
        image_mask: 1 where ``input_ids`` holds an image token.
        extra: further tensors the base model's forward takes beside the pixels (``image_grid_thw``,
            ``pixel_attention_mask``, ``image_sizes``, ...), first dimension per sample (or per pixel row, see
            ``pixel_rows``).
        pixel_rows: for pixel inputs flattened over the batch, how many rows of ``pixel_values`` belong to each
            sample; ``None`` when ``pixel_values`` has one entry per sample.
        cluster_ids: each sample's instruction cluster (MoCLE routing); ``None`` without cluster routing.
        references: the reference answers, ``None`` where there are none (``predict``).
        questions: the question of each sample, as asked.
        image_paths: where each sample's image was read from (for ``predict``'s output).
    """

    ids: list[str]
    datasets: list[str]
    tasks: list[str | None]
    prompt_ids: torch.Tensor
    prompt_attention_mask: torch.Tensor
    pixel_values: torch.Tensor | None = None
    input_ids: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    answer_mask: torch.Tensor | None = None
    image_mask: torch.Tensor | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    pixel_rows: torch.Tensor | None = None
    cluster_ids: torch.Tensor | None = None
    references: list[str] | None = None
    questions: list[str] | None = None
    image_paths: list[str] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_answers(self) -> bool:
        """Whether the batch holds reference answers (training and evaluation) or only questions (``predict``)."""
        return self.references is not None

    def select(self, rows: Sequence[int]) -> FoodBatch:
        """The batch of ``rows`` only, in that order; pixel rows of flattened inputs follow their samples.

        Prompt columns that are padding in every selected row are dropped (prompts are left-padded for the whole
        batch, and generation should not step through columns no selected row uses)."""
        rows = list(rows)
        index = torch.tensor(rows, dtype=torch.long)
        pixel_index = None if self.pixel_rows is None else self._pixel_row_index(rows)
        changes = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name in ("pixel_rows",) or value is None:
                continue
            if item.name == "pixel_values":
                changes[item.name] = value[(pixel_index if pixel_index is not None else index).to(value.device)]
            elif item.name == "extra":
                changes[item.name] = {name: tensor[self._index_for(tensor, index, pixel_index)]
                                      for name, tensor in value.items()}
            elif isinstance(value, torch.Tensor):
                changes[item.name] = value[index.to(value.device)]
            elif isinstance(value, list):
                changes[item.name] = [value[row] for row in rows]
        if self.pixel_rows is not None:
            changes["pixel_rows"] = self.pixel_rows[index.to(self.pixel_rows.device)]
        selected = replace(self, **changes)
        keep = selected.prompt_attention_mask.bool().any(dim=0)
        selected.prompt_ids = selected.prompt_ids[:, keep]
        selected.prompt_attention_mask = selected.prompt_attention_mask[:, keep]
        return selected

    def _pixel_row_index(self, rows: list[int]) -> torch.Tensor:
        counts = self.pixel_rows.tolist()
        starts = [sum(counts[:row]) for row in range(len(counts))]
        return torch.tensor([position for row in rows for position in range(starts[row], starts[row] + counts[row])],
                            dtype=torch.long)

    def _index_for(self, tensor: torch.Tensor, index: torch.Tensor, pixel_index: torch.Tensor | None) -> torch.Tensor:
        """Per-sample tensors take the sample index; tensors with one row per pixel row take the pixel rows."""
        if pixel_index is not None and tensor.shape[0] != len(self) and tensor.shape[0] == int(self.pixel_rows.sum()):
            return pixel_index.to(tensor.device)
        return index.to(tensor.device)
