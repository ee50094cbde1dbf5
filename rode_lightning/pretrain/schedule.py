"""The optimisation loop every pre-training stage shares: AdamW, warm-up then cosine decay, seeded batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from rode_lightning.model.lr_schedule import warmup_cosine
from rode_lightning.pretrain.recipe import StageSchedule
from rode_lightning.progress import progress


def batches(size: int, schedule: StageSchedule, generator: torch.Generator) -> Iterable[torch.Tensor]:
    """``schedule.steps`` index batches over ``range(size)``: epochs of seeded permutations, cut into batches."""
    order = torch.empty(0, dtype=torch.long)
    for _ in range(schedule.steps):
        if len(order) < schedule.batch_size:
            order = torch.cat([order, torch.randperm(size, generator=generator)])
        batch, order = order[:schedule.batch_size], order[schedule.batch_size:]
        yield batch


def train(parameters: list[torch.nn.Parameter], schedule: StageSchedule, size: int, seed: int,
          loss_of: Callable[[torch.Tensor], torch.Tensor], description: str) -> float:
    """Minimise ``loss_of(index batch)``; returns the mean loss of the last tenth of the steps."""
    optimizer = torch.optim.AdamW(parameters, lr=schedule.learning_rate, weight_decay=schedule.weight_decay)
    scheduler = warmup_cosine(optimizer, schedule.warmup_steps, schedule.steps)
    generator = torch.Generator().manual_seed(seed)
    tail: list[float] = []
    bar = progress(batches(size, schedule, generator), description, "step", total=schedule.steps)
    for step, batch in enumerate(bar):
        loss = loss_of(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        if step >= schedule.steps - max(1, schedule.steps // 10):
            tail.append(loss.item())
        if hasattr(bar, "set_postfix") and step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return sum(tail) / len(tail)
