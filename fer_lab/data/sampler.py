"""Class-balanced sampling (AffectNet's natural distribution is ~40% happiness, <1% contempt).

Each sample is drawn with probability proportional to 1 / (count of its class), with
replacement, so every class present is drawn equally often in expectation; classes absent from
``labels`` are never drawn.  Under DDP every rank generates the same global draw sequence from
``seed + epoch`` and takes every ``world_size``-th draw starting at ``rank``: the shares are
disjoint and of equal length (the sequence is padded to a multiple of ``world_size``).
Call :meth:`ClassBalancedSampler.set_epoch` every epoch, as with ``DistributedSampler``.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["ClassBalancedSampler", "class_balanced_sampler"]


class ClassBalancedSampler(Sampler[int]):
    def __init__(self, labels: Sequence[int], num_samples: int | None = None, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.size == 0:
            raise ValueError(f"labels must be a non-empty 1-D sequence of class indices, got shape {labels.shape}")
        if labels.dtype.kind not in "iu":
            if labels.dtype.kind == "f" and np.all(labels == np.round(labels)):
                labels = labels.astype(np.int64)
            else:
                raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
        if labels.min() < 0:
            raise ValueError("labels must be non-negative class indices (drop ignored samples first)")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        total = len(labels) if num_samples is None else int(num_samples)
        if total < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.class_counts = np.bincount(labels.astype(np.int64))
        self.weights = torch.from_numpy(1.0 / self.class_counts[labels]).double()
        self.num_samples_total = total
        self.per_rank = math.ceil(total / world_size)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Reseed: epoch e draws from ``seed + e`` (identically on every rank)."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        draws = torch.multinomial(self.weights, self.per_rank * self.world_size, replacement=True, generator=g)
        return iter(draws[self.rank::self.world_size].tolist())

    def __len__(self) -> int:
        return self.per_rank


def class_balanced_sampler(labels: Sequence[int], num_samples: int | None = None, seed: int = 0,
                           rank: int = 0, world_size: int = 1) -> ClassBalancedSampler:
    """Inverse-class-frequency sampler with replacement; ``num_samples`` draws in total (default
    ``len(labels)``, the epoch length the official AffectNet log suggests), split over ranks."""
    return ClassBalancedSampler(labels, num_samples, seed, rank, world_size)
