"""The warm-up and cosine schedule is transformers' get_cosine_schedule_with_warmup, factor for factor."""

from __future__ import annotations

import pytest
import torch
from transformers import get_cosine_schedule_with_warmup

from rode_lightning.model.lr_schedule import warmup_cosine


@pytest.mark.parametrize("warmup, total", [(0, 7), (3, 10), (10, 10), (5, 3)])
def test_every_step_has_transformers_learning_rate(warmup, total):
    rates = []
    for make in (warmup_cosine, get_cosine_schedule_with_warmup):
        optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=3e-4)
        scheduler = make(optimizer, warmup, total)
        steps = []
        for _ in range(total + 3):
            steps.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        rates.append(steps)
    assert rates[0] == rates[1]
    assert rates[0][0] == (0.0 if warmup else 3e-4)
    if warmup < total:
        assert rates[0][total] == 0.0 and max(rates[0]) == 3e-4
