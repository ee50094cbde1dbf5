"""A training DataLoader whose order is a function of (seed, epoch) and which resumes in the middle of an epoch.

Lightning 2.6 does not replay or skip anything for a plain map-style DataLoader when it resumes from a checkpoint
written mid-epoch: it continues counting batches from where the checkpoint was (``batch_idx`` k), but takes them
from a fresh iterator, so the rest of the epoch is the *beginning* of a new order (``shuffle=True`` draws it from the
global torch RNG, a ``WeightedRandomSampler`` restarts its generator) and it warns "your dataloader is not
resumable". What it does do is save ``state_dict()`` of every training loader that has one in the checkpoint (loop
state, ``combined_loader``) and call ``load_state_dict()`` on resume, before iterating.

:class:`ResumableDataLoader` uses that interface:

* its :class:`ResumableSampler` orders epoch ``e`` by a generator seeded with ``seed + e`` (uniform permutation, or
  draws with replacement by sample weight), and Lightning calls ``set_epoch`` before every epoch, so any process
  knows the order of any epoch without having seen the previous ones;
* its state is (epoch, batches handed out in that epoch); after ``load_state_dict`` the next iteration of that
  epoch skips the batches already trained on, at the index level (no sample of them is loaded). If Lightning moves
  on to the next epoch instead (the checkpoint was written at the end of an epoch), nothing is skipped;
* worker seeds come from the loader's own generator, so data loading draws nothing from the global torch RNG that
  dropout uses (the model restores that RNG from its checkpoint).

The sampler is a ``DistributedSampler``: under DDP Lightning keeps it instead of swapping in its own, and it deals
each process its share of the epoch's order (ranks read from ``torch.distributed`` when not given).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class ResumableSampler(DistributedSampler):
    """This process's share of epoch ``e``'s order, drawn from a generator seeded with ``seed + e``.

    Args:
        dataset: the map-style dataset sampled.
        seed: the order of every epoch follows from it.
        weights: optional sampling weight per sample: each epoch then draws ``len(dataset)`` samples with
            replacement in proportion to them; without weights each epoch is a permutation.
        num_replicas, rank: the processes sharing each epoch; default from ``torch.distributed`` (1 and 0 without).

    ``set_epoch`` picks the epoch of the next iteration; an iteration without it takes the following epoch, the way a
    sampler with its own generator gives a new order every time. ``start`` samples of the next iteration are skipped.
    """

    def __init__(self, dataset: Dataset, seed: int = 0, weights: Sequence[float] | torch.Tensor | None = None,
                 num_replicas: int | None = None, rank: int | None = None):
        distributed = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if distributed else 1
        if rank is None:
            rank = dist.get_rank() if distributed else 0
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.weights = None
        if weights is not None:
            self.weights = torch.as_tensor(weights, dtype=torch.double)
            if self.weights.shape != (len(dataset),):
                raise ValueError(f"ResumableSampler: {tuple(self.weights.shape)} weights for {len(dataset)} samples")
            if not (self.weights >= 0).all() or not self.weights.sum() > 0:
                raise ValueError("ResumableSampler: weights must be >= 0 and not all 0")
        self.start = 0

    def epoch_order(self, epoch: int) -> list[int]:
        """This process's indices for ``epoch``, before any skipping."""
        generator = torch.Generator().manual_seed(self.seed + epoch)
        size = len(self.dataset)
        if self.weights is not None:
            indices = torch.multinomial(self.weights, self.total_size, replacement=True, generator=generator).tolist()
        else:
            indices = torch.randperm(size, generator=generator).tolist()
            padding = self.total_size - size  # as DistributedSampler: repeat from the start so shares are equal
            indices += (indices * math.ceil(padding / size))[:padding]
        return indices[self.rank:self.total_size:self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        epoch, start = self.epoch, self.start
        self.epoch, self.start = epoch + 1, 0  # set_epoch, as Lightning calls it before every epoch, overrides this
        return iter(self.epoch_order(epoch)[start:])


class ResumableDataLoader(DataLoader):
    """A training DataLoader over a :class:`ResumableSampler` that Lightning saves and restores mid-epoch.

    Args:
        dataset: the map-style training dataset.
        batch_size: samples per batch (the last batch of an epoch may be smaller).
        seed: seed of the order of every epoch, and of the worker seeds.
        weights: optional sampling weight per sample (see :class:`ResumableSampler`).
        **kwargs: any other ``DataLoader`` argument but ``shuffle``, ``sampler`` and ``batch_sampler``.
    """

    def __init__(self, dataset: Dataset, batch_size: int = 1, seed: int = 0,
                 weights: Sequence[float] | torch.Tensor | None = None, **kwargs: Any):
        kwargs.setdefault("generator", torch.Generator().manual_seed(seed))
        super().__init__(dataset, batch_size=batch_size, sampler=ResumableSampler(dataset, seed, weights), **kwargs)
        self._epoch: int | None = None  # epoch of the current iteration
        self._position = 0  # batches of it handed out (skipped ones included)
        self._resume: dict[str, int] | None = None

    def __iter__(self) -> Iterator[Any]:
        # A generator: nothing runs (no worker starts, no index is drawn) until the first batch is asked for, which
        # Lightning does after `set_epoch` - also for the iterator it creates before the first epoch of a resumed run.
        return self._batches()

    def _batches(self) -> Iterator[Any]:
        sampler: ResumableSampler = self.sampler
        epoch, skip = sampler.epoch, 0
        if self._resume is not None:
            if self._resume["epoch"] == epoch:
                skip = self._resume["batches"]
            self._resume = None
        sampler.start = skip * self.batch_size
        self._epoch, self._position = epoch, skip
        for batch in super().__iter__():
            self._position += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        epoch = self.sampler.epoch if self._epoch is None else self._epoch
        return {"epoch": epoch, "batches": self._position, "batch_size": self.batch_size,
                "samples": len(self.sampler), "seed": self.sampler.seed}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        saved = {key: state_dict.get(key) for key in ("batch_size", "samples", "seed")}
        current = {"batch_size": self.batch_size, "samples": len(self.sampler), "seed": self.sampler.seed}
        if saved != current:
            rank_zero_warn(f"resuming training data mid-epoch: the checkpoint's loader had {saved}, this one has "
                           f"{current}; the rest of the epoch is not the one the interrupted run would have seen")
            return
        self.sampler.set_epoch(state_dict["epoch"])
        self._resume = {"epoch": state_dict["epoch"], "batches": state_dict["batches"]}
