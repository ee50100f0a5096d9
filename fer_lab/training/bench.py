"""Training-step throughput for the distribution sources (used by ``fer-lab bench``)."""
from __future__ import annotations

import time

import torch
import torch.nn as nn

from ..augment import AugmentConfig, augment_batch, batch_generator, sample_params
from ..models import create_model, model_default_cfg
from .targets import label_distribution_loss, teacher_distribution

__all__ = ["benchmark_training"]


def benchmark_training(arch: str = "efficientface", target: str = "hard", input_size: int = 112,
                       batch_size: int = 64, steps: int = 10, warmup: int = 2, teacher_arch: str = "ldg_resnet50",
                       num_classes: int = 7, device: str = "cpu", amp: bool = True) -> dict:
    """Images/s of one full training step (augmentation + forward + loss + backward + SGD step)."""
    if target not in ("hard", "ldg-online", "ldg-cached"):
        raise ValueError(f"unknown target {target!r}")
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    cfg = model_default_cfg(arch)
    model = create_model(arch, num_classes=num_classes).to(dev).train()
    teacher = create_model(teacher_arch, num_classes=num_classes).to(dev).eval() if target == "ldg-online" else None
    if cuda:
        model = model.to(memory_format=torch.channels_last)
        if teacher is not None:
            teacher = teacher.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch_size * 4, input_size, input_size, 3), dtype=torch.uint8, generator=gen).to(dev)
    labels = torch.randint(0, num_classes, (batch_size * 4,), generator=gen).to(dev)
    cached = torch.softmax(torch.randn(batch_size * 4, num_classes, generator=gen), 1).to(dev)
    aug = AugmentConfig()

    def step(i):
        sl = slice((i % 4) * batch_size, (i % 4 + 1) * batch_size)
        x = augment_batch(images[sl], sample_params(batch_size, aug, batch_generator(0, 0, i)), cfg["mean"], cfg["std"])
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp and cuda):
            logits = model(x)
            q = teacher_distribution(teacher, x) if teacher is not None else None
        if target == "hard":
            loss = nn.functional.cross_entropy(logits.float(), labels[sl])
        else:
            loss = label_distribution_loss(logits.float(), q if q is not None else cached[sl])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(warmup):
        step(i)
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    if cuda:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"arch": arch, "target": target, "teacher": teacher_arch if teacher is not None else None,
            "input_size": input_size, "batch_size": batch_size, "steps": steps, "device": str(dev),
            "img_per_s": batch_size * steps / dt, "s_per_step": dt / steps, "threads": torch.get_num_threads()}
