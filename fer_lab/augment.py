"""Batched augmentation on uint8 tensors (CPU or GPU), deterministic per global batch.

Images come from the uint8 cache already at the model's input size (the same
``resize_square`` crop that inference uses), so augmentation never changes the framing
statistics at test time.  One affine warp per image does random-resized-crop-style zoom,
aspect jitter, translation, rotation and flip in a single ``grid_sample``; random erasing
simulates occlusion.  Parameters are drawn for the *global* batch from a generator seeded by
(seed, epoch, step), so a DDP rank that augments its slice produces exactly what a single
process would: resumed and distributed runs see identical pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .preprocess import normalize_uint8

__all__ = ["AugmentConfig", "sample_params", "augment_batch", "eval_batch", "batch_generator"]


@dataclass
class AugmentConfig:
    scale: tuple = (0.8, 1.0)       # fraction of the face area kept (RandomResizedCrop-like)
    ratio: tuple = (0.9, 1.1)       # aspect jitter
    translate: float = 0.08         # max shift, fraction of the size
    rotate: float = 10.0            # max in-plane rotation, degrees
    flip: bool = True
    erase_p: float = 0.25           # random erasing probability (occlusion)
    erase_area: tuple = (0.02, 0.2)
    enabled: bool = True


def batch_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 100_003 + step)


def sample_params(n: int, cfg: AugmentConfig, gen: torch.Generator) -> dict:
    """All random numbers for a global batch of n images (CPU tensors)."""
    u = torch.rand(n, 10, generator=gen)
    lo, hi = cfg.scale
    area = lo + (hi - lo) * u[:, 0]
    log_r = math.log(cfg.ratio[0]) + (math.log(cfg.ratio[1]) - math.log(cfg.ratio[0])) * u[:, 1]
    r = torch.exp(log_r)
    return {
        "sx": torch.sqrt(area * r).clamp(max=1.0), "sy": torch.sqrt(area / r).clamp(max=1.0),
        "tx": (u[:, 2] * 2 - 1) * cfg.translate, "ty": (u[:, 3] * 2 - 1) * cfg.translate,
        "rot": (u[:, 4] * 2 - 1) * math.radians(cfg.rotate),
        "flip": (u[:, 5] < 0.5) if cfg.flip else torch.zeros(n, dtype=torch.bool),
        "erase": u[:, 6] < cfg.erase_p,
        "ea": cfg.erase_area[0] + (cfg.erase_area[1] - cfg.erase_area[0]) * u[:, 7],
        "ex": u[:, 8], "ey": u[:, 9],
    }


def slice_params(p: dict, sl: slice) -> dict:
    return {k: v[sl] for k, v in p.items()}


def augment_batch(images_u8: torch.Tensor, params: dict, mean, std) -> torch.Tensor:
    """B x H x W x 3 uint8 (any device) -> augmented, normalised B x 3 x H x W float."""
    x = normalize_uint8(images_u8, mean, std)
    b, _, h, w = x.shape
    dev = x.device
    p = {k: v.to(dev) for k, v in params.items()}
    cos, sin = torch.cos(p["rot"]), torch.sin(p["rot"])
    fx = torch.where(p["flip"], -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=dev)
    # output grid -> input coords: zoom (crop) then rotate, flip on x, shift
    theta[:, 0, 0] = cos * p["sx"] * fx
    theta[:, 0, 1] = -sin * p["sy"]
    theta[:, 1, 0] = sin * p["sx"] * fx
    theta[:, 1, 1] = cos * p["sy"]
    theta[:, 0, 2] = p["tx"] * 2
    theta[:, 1, 2] = p["ty"] * 2
    grid = F.affine_grid(theta, (b, 3, h, w), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if p["erase"].any():
        side = torch.sqrt(p["ea"])  # square patch, fraction of the side
        ys = torch.arange(h, device=dev).view(1, h, 1) / h
        xs = torch.arange(w, device=dev).view(1, 1, w) / w
        y0 = (p["ey"] * (1 - side)).view(b, 1, 1)
        x0 = (p["ex"] * (1 - side)).view(b, 1, 1)
        s = side.view(b, 1, 1)
        mask = (ys >= y0) & (ys < y0 + s) & (xs >= x0) & (xs < x0 + s) & p["erase"].view(b, 1, 1)
        x = x.masked_fill(mask.unsqueeze(1), 0.0)  # 0 = the dataset mean after normalisation
    return x


def eval_batch(images_u8: torch.Tensor, mean, std) -> torch.Tensor:
    """No augmentation: exactly what inference sees (the cached crop, normalised)."""
    return normalize_uint8(images_u8, mean, std)
