"""Training-step throughput for the distribution sources (used by ``fer-lab bench``)."""
from __future__ import annotations

import tempfile
import time

import torch

from ..engine import to_channels_last
from ..labels import canonical
from ..models import create_model
from .config import TrainConfig
from .loop import SplitData, build_run, train_one_epoch

__all__ = ["benchmark_training"]


def benchmark_training(arch: str = "efficientface", target: str = "hard", input_size: int = 112,
                       batch_size: int = 64, steps: int = 10, warmup: int = 2, teacher_arch: str = "ldg_resnet50",
                       num_classes: int = 7, device: str = "cpu", amp: bool = True, channels_last: bool = True) -> dict:
    """Images/s of the trainer's own :func:`~fer_lab.training.loop.train_one_epoch` (batch gather,
    augmentation, forward, loss, backward, SGD and schedule step) on random images: ``warmup``
    steps, then one timed epoch of ``steps`` steps.  ldg-online runs a randomly initialised
    ``teacher_arch``; ldg-cached reads random distributions.  ``channels_last``: the trainer's setting
    (default on, as in training)."""
    if target not in ("hard", "ldg-online", "ldg-cached"):
        raise ValueError(f"unknown target {target!r}")
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    gen = torch.Generator().manual_seed(0)
    n = batch_size * steps
    images = torch.randint(0, 256, (n, input_size, input_size, 3), dtype=torch.uint8, generator=gen).numpy()
    labels = torch.randint(0, num_classes, (n,), generator=gen).numpy()
    data = {"train": SplitData(images, labels, None, canonical(num_classes), key="bench")}
    teacher = teacher_dists = None
    if target == "ldg-online":
        teacher = create_model(teacher_arch, num_classes=num_classes).to(dev).eval()
        if channels_last:
            teacher = to_channels_last(teacher)  # as load_teacher
    elif target == "ldg-cached":
        teacher_dists = torch.softmax(torch.randn(n, num_classes, generator=gen), 1)
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(arch=arch, num_classes=num_classes, input_size=input_size, batch_size=batch_size,
                          target=target, teacher=f"random {teacher_arch}" if target != "hard" else None,
                          epochs=2, lr=0.01, val_split=None, test_split=None, device=device, amp=amp,
                          out_dir=out, resume=False, progress=False, channels_last=channels_last)
        run = build_run(cfg, data, teacher=teacher, teacher_dists=teacher_dists)
        if warmup:
            train_one_epoch(run, 0, max_steps=warmup)
        if cuda:
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        train_one_epoch(run, 1)
        if cuda:
            torch.cuda.synchronize()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
    return {"arch": arch, "target": target, "teacher": teacher_arch if teacher is not None else None,
            "input_size": input_size, "batch_size": batch_size, "steps": steps, "device": str(dev),
            "img_per_s": batch_size * steps / dt, "s_per_step": dt / steps,
            # process CPU time: with one thread, free of the time other processes preempted this one
            "cpu_s_per_step": dc / steps, "threads": torch.get_num_threads(),
            "channels_last": channels_last}
