"""The typed batch: selecting rows (with flattened pixel rows following their samples) and Lightning's move to a
device, which rebuilds the dataclass."""

from __future__ import annotations

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device

from rode_lightning.batch import FoodBatch


def batch_of_three(flattened: bool) -> FoodBatch:
    prompt_ids = torch.tensor([[0, 0, 5, 6], [0, 7, 8, 9], [0, 0, 0, 4]])
    pixel_rows = torch.tensor([2, 1, 3])
    pixels = (torch.arange(6 * 4, dtype=torch.float).reshape(6, 4) if flattened
              else torch.arange(3 * 2, dtype=torch.float).reshape(3, 2))
    extra = {"image_grid_thw": torch.tensor([[1, 1, 2], [1, 1, 1], [1, 3, 1]])}
    return FoodBatch(ids=["a", "b", "c"], datasets=["d1", "d2", "d1"], tasks=["category", None, "recipe"],
                     prompt_ids=prompt_ids, prompt_attention_mask=(prompt_ids != 0).long(), pixel_values=pixels,
                     input_ids=torch.arange(15).reshape(3, 5), attention_mask=torch.ones(3, 5, dtype=torch.long),
                     extra=extra, pixel_rows=pixel_rows if flattened else None,
                     cluster_ids=torch.tensor([4, 5, 6]), references=["x", "y", "z"])


def test_select_takes_the_rows_in_order_and_drops_shared_padding():
    batch = batch_of_three(flattened=False)
    selected = batch.select([2, 0])
    assert selected.ids == ["c", "a"] and selected.tasks == ["recipe", "category"] and selected.references == ["z", "x"]
    assert torch.equal(selected.pixel_values, batch.pixel_values[[2, 0]])
    assert torch.equal(selected.cluster_ids, torch.tensor([6, 4]))
    assert torch.equal(selected.input_ids, batch.input_ids[[2, 0]])
    # Column 0 is padding in both selected rows, column 1 too: dropped. The left padding of row "c" remains.
    assert selected.prompt_ids.tolist() == [[0, 4], [5, 6]]
    assert selected.prompt_attention_mask.tolist() == [[0, 1], [1, 1]]
    assert len(selected) == 2 and len(batch) == 3  # the original is untouched


def test_select_takes_the_pixel_rows_of_flattened_inputs():
    batch = batch_of_three(flattened=True)
    selected = batch.select([2, 0])
    # Sample a owns pixel rows 0-1, b row 2, c rows 3-5.
    assert torch.equal(selected.pixel_values, batch.pixel_values[[3, 4, 5, 0, 1]])
    assert selected.pixel_rows.tolist() == [3, 2]
    assert selected.extra["image_grid_thw"].tolist() == [[1, 3, 1], [1, 1, 2]]


def test_lightning_moves_the_batch_and_keeps_its_type():
    batch = batch_of_three(flattened=True)
    moved = move_data_to_device(batch, torch.device("meta"))
    assert isinstance(moved, FoodBatch) and moved.ids == batch.ids
    assert moved.pixel_values.device.type == "meta" and moved.extra["image_grid_thw"].device.type == "meta"
    assert moved.prompt_ids.device.type == "meta" and moved.pixel_rows.device.type == "meta"
