"""Class-balanced sampling (AffectNet's natural distribution is ~40% happiness, <1% contempt).

Each sample is drawn with probability proportional to 1 / (count of its class), with
replacement, so every class present is drawn equally often in expectation; classes absent from
``labels`` are never drawn.  An epoch's draws come from ``batch_generator(seed, epoch, -1)``:
:meth:`ClassBalancedSampler.global_draws` is the whole sequence, which the trainer
(``balanced_sampling``) cuts into global batches and slices per rank itself.  As a DataLoader
``Sampler`` under DDP, every rank generates the same global sequence and takes every
``world_size``-th draw starting at ``rank``: the shares are disjoint and of equal length (the
sequence is padded to a multiple of ``world_size``).  Call :meth:`ClassBalancedSampler.set_epoch`
every epoch, as with ``DistributedSampler``.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["ClassBalancedSampler", "class_balanced_sampler", "batch_generator"]


def batch_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """The random stream of one global batch, seeded by (seed, epoch, step): the sampler's epoch
    draws (step -1) and the trainer's sample order and augmentation
    (:mod:`fer_lab.training.augment`) all come from it."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 100_003 + step)


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
        labels = torch.from_numpy(labels.astype(np.int64))
        self.class_counts = np.bincount(labels.numpy())
        # float32 1/count, as the trainer has always drawn: the weights' dtype changes the draws
        self.weights = (1.0 / torch.bincount(labels).float())[labels]
        self.num_samples_total = total
        self.per_rank = math.ceil(total / world_size)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Reseed: epoch e draws from ``batch_generator(seed, e, -1)`` (identically on every rank)."""
        self.epoch = int(epoch)

    def global_draws(self) -> torch.Tensor:
        """This epoch's draws for all ranks together (``per_rank * world_size`` indices)."""
        return torch.multinomial(self.weights, self.per_rank * self.world_size, replacement=True,
                                 generator=batch_generator(self.seed, self.epoch, -1))

    def __iter__(self) -> Iterator[int]:
        return iter(self.global_draws()[self.rank::self.world_size].tolist())

    def __len__(self) -> int:
        return self.per_rank


def class_balanced_sampler(labels: Sequence[int], num_samples: int | None = None, seed: int = 0,
                           rank: int = 0, world_size: int = 1) -> ClassBalancedSampler:
    """Inverse-class-frequency sampler with replacement; ``num_samples`` draws in total (default
    ``len(labels)``, the epoch length the official AffectNet log suggests), split over ranks."""
    return ClassBalancedSampler(labels, num_samples, seed, rank, world_size)
