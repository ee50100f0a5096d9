"""Batched augmentation on uint8 tensors (CPU or GPU), deterministic per global batch.

Images come from the uint8 cache already at the model's input size (the same
``resize_square`` crop that inference uses), so augmentation never changes the framing
statistics at test time.  One affine warp per image does random-resized-crop-style zoom,
aspect jitter, translation, rotation and flip in a single ``grid_sample``; random erasing
simulates occlusion.  Optional photometric jitter (gamma, contrast, brightness, Gaussian blur,
grayscale) acts on [0, 1] pixels before normalisation: real uploads differ from the training set in
exposure, camera processing and sharpness.  Parameters are drawn for the *global* batch from a generator seeded by
(seed, epoch, step), so a DDP rank that augments its slice produces exactly what a single
process would: resumed and distributed runs see identical pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.sampler import batch_generator  # the seeded stream per global batch, re-exported here
from ..preprocess import normalize_uint8

__all__ = ["AugmentConfig", "sample_params", "augment_batch", "eval_batch", "batch_generator", "photometric"]


@dataclass
class AugmentConfig:
    scale: tuple = (0.8, 1.0)       # fraction of the face area kept (RandomResizedCrop-like)
    ratio: tuple = (0.9, 1.1)       # aspect jitter
    translate: float = 0.08         # max shift, fraction of the size
    rotate: float = 10.0            # max in-plane rotation, degrees
    flip: bool = True
    erase_p: float = 0.25           # random erasing probability (occlusion)
    erase_area: tuple = (0.02, 0.2)
    # photometric jitter (all off by default; the same random stream as before when off)
    gamma: tuple = (1.0, 1.0)       # log-uniform gamma range, pixels ** gamma
    contrast: tuple = (1.0, 1.0)    # log-uniform contrast factor around each image's mean
    brightness: float = 0.0         # max additive shift of [0, 1] pixels
    blur_p: float = 0.0             # Gaussian blur probability
    blur_sigma: tuple = (0.5, 1.5)  # blur sigma range, pixels at the model's input size
    grayscale_p: float = 0.0        # probability of converting to gray (colour models)
    enabled: bool = True

    @property
    def photometric(self) -> bool:
        return (tuple(self.gamma) != (1.0, 1.0) or tuple(self.contrast) != (1.0, 1.0) or self.brightness > 0
                or self.blur_p > 0 or self.grayscale_p > 0)


def sample_params(n: int, cfg: AugmentConfig, gen: torch.Generator) -> dict:
    """All random numbers for a global batch of n images (CPU tensors)."""
    u = torch.rand(n, 10, generator=gen)
    lo, hi = cfg.scale
    area = lo + (hi - lo) * u[:, 0]
    log_r = math.log(cfg.ratio[0]) + (math.log(cfg.ratio[1]) - math.log(cfg.ratio[0])) * u[:, 1]
    r = torch.exp(log_r)
    zmax = max(1.0, math.sqrt(hi))  # scale > 1: zoom out (looser crop than the cached framing)
    p = {
        "sx": torch.sqrt(area * r).clamp(max=zmax), "sy": torch.sqrt(area / r).clamp(max=zmax),
        "tx": (u[:, 2] * 2 - 1) * cfg.translate, "ty": (u[:, 3] * 2 - 1) * cfg.translate,
        "rot": (u[:, 4] * 2 - 1) * math.radians(cfg.rotate),
        "flip": (u[:, 5] < 0.5) if cfg.flip else torch.zeros(n, dtype=torch.bool),
        "erase": u[:, 6] < cfg.erase_p,
        "ea": cfg.erase_area[0] + (cfg.erase_area[1] - cfg.erase_area[0]) * u[:, 7],
        "ex": u[:, 8], "ey": u[:, 9],
    }
    if cfg.photometric:  # a second draw: configurations without it keep their exact old stream
        v = torch.rand(n, 6, generator=gen)

        def log_uniform(rng, t):
            lo_, hi_ = math.log(rng[0]), math.log(rng[1])
            return torch.exp(lo_ + (hi_ - lo_) * t)

        p.update(gamma=log_uniform(cfg.gamma, v[:, 0]), contrast=log_uniform(cfg.contrast, v[:, 1]),
                 brightness=(v[:, 2] * 2 - 1) * cfg.brightness, blur=v[:, 3] < cfg.blur_p,
                 sigma=cfg.blur_sigma[0] + (cfg.blur_sigma[1] - cfg.blur_sigma[0]) * v[:, 4],
                 gray=v[:, 5] < cfg.grayscale_p)
    return p


def slice_params(p: dict, sl: slice) -> dict:
    return {k: v[sl] for k, v in p.items()}


def augment_batch(images_u8: torch.Tensor, params: dict, mean, std) -> torch.Tensor:
    """B x H x W x 3 uint8 (any device) -> augmented, normalised B x 3 x H x W float."""
    if "gamma" in params:
        x = photometric(normalize_uint8(images_u8, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)), params)
        m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        x = (x - m) / s
    else:
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


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image separable Gaussian blur (B x 3 x H x W, sigma per image, reflect padding)."""
    b, c, h, w = x.shape
    r = max(1, int(math.ceil(3 * float(sigma.max()))))
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t.view(1, -1) / sigma.view(-1, 1).clamp_min(1e-3)) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)          # (B*C) x (2r+1)
    y = F.pad(x.reshape(1, b * c, h, w), (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k.view(b * c, 1, 1, -1), groups=b * c)
    y = F.conv2d(y, k.view(b * c, 1, -1, 1), groups=b * c)
    return y.view(b, c, h, w)


def photometric(x: torch.Tensor, p: dict) -> torch.Tensor:
    """Gamma, contrast, brightness, grayscale and blur on B x 3 x H x W pixels in [0, 1]."""
    dev = x.device
    v = lambda k: p[k].to(dev).view(-1, 1, 1, 1)  # noqa: E731
    x = x.clamp(0, 1) ** v("gamma").to(x.dtype)
    mu = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mu) * v("contrast").to(x.dtype) + mu + v("brightness").to(x.dtype)
    gray = p["gray"].to(dev)
    if gray.any():
        g = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)
        x = torch.where(gray.view(-1, 1, 1, 1), g, x)
    blur = p["blur"].to(dev)
    if blur.any():
        idx = blur.nonzero().squeeze(1)
        x = x.clone()
        x[idx] = _gaussian_blur(x[idx], p["sigma"].to(dev)[idx].to(x.dtype))
    return x.clamp(0, 1)


def eval_batch(images_u8: torch.Tensor, mean, std) -> torch.Tensor:
    """No augmentation: exactly what inference sees (the cached crop, normalised)."""
    return normalize_uint8(images_u8, mean, std)
