"""The training loop: SLL and label-distribution learning, resumable, logged, DDP-ready.

Split as timm's ``train.py``: :func:`build_run` assembles a run (data, model, teacher, optimizer,
schedule, the state of ``last.pt`` when resuming), :func:`train_one_epoch` runs an epoch's steps,
:func:`validate` scores a split, :func:`save_state` writes ``last.pt``; :func:`train` strings
them together and exports the selected model.

Every epoch's sample order and augmentation are derived from (seed, epoch, step) for the *global*
batch, so a run killed at any point and resumed from its last epoch checkpoint computes exactly
what one uninterrupted process computes (on CPU; CUDA adds cuDNN autotuning and bf16 autocast).
One process on CPU or one GPU by default; ``torchrun --nproc-per-node=N -m fer_lab.train`` runs
the same code with DistributedDataParallel: each rank trains on its slice of the same global
batch with global BatchNorm statistics, which matches one process up to float round-off in the
cross-rank reductions (training amplifies it over steps, so runs agree closely, not bitwise).
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .augment import augment_batch, batch_generator, eval_batch, sample_params, slice_params
from ..checkpoint import (CheckpointError, ModelMeta, atomic_write, file_sha1, load_model, load_models, ProbabilityEnsemble, resize_batch, resolve_weights, save_model,
                          split_checkpoint_spec)
from ..data.faceset import FaceSet
from ..data.sampler import ClassBalancedSampler
from ..engine import run_batches, run_model, to_channels_last
from ..labels import LabelMap
from ..metrics import PRIOR_TAUS, classification_metrics, fit_prior_correction_from_probs, soft_cross_entropy
from ..models import create_model
from .config import TrainConfig
from .distributed import (DistInfo, all_gather_cat, all_reduce_sum, barrier, cleanup, convert_global_batchnorm,
                          init_distributed)
from .targets import (class_prior, class_weights, label_distribution_loss, mix_targets, smooth_labels,
                      teacher_distribution)

__all__ = ["SplitData", "load_split", "predict_arrays", "train", "Run", "build_run", "train_one_epoch", "validate",
           "save_state", "compute_loss", "epoch_order", "TeacherRefused", "teacher_check",
           "cache_teacher_distributions", "resolve_device", "model_for_export", "teacher_input", "teacher_size",
           "resize_batch"]


class TeacherRefused(ValueError):
    """The LDG is unusable for distillation (label map or accuracy)."""


#: the trainer's splits are the data layer's FaceSet (images, labels, dists, label_map, ids, key)
SplitData = FaceSet


def load_split(cfg: TrainConfig, split: str, progress: bool | None = None) -> SplitData:
    """Dataset adapter -> preprocessed uint8 cache (decode and crop once, memory-mapped)."""
    from ..data import build_cache, build_dataset

    kw = {**cfg.dataset_kwargs, **(cfg.split_kwargs or {}).get(split, {})}
    ds = build_dataset(cfg.dataset, cfg.root, split, num_classes=cfg.num_classes, **kw)
    cache = build_cache(ds, cfg.input_size, recipe=cfg.recipe, grayscale=cfg.grayscale,
                        progress=cfg.progress if progress is None else progress)
    return SplitData(cache.images, np.asarray(cache.labels, dtype=np.int64),
                     None if cache.dists is None else np.asarray(cache.dists, dtype=np.float32),
                     cache.label_map, list(cache.ids), cache.key)


def resolve_device(device: str, info: DistInfo | None = None) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and info is not None and info.enabled:
        device = f"cuda:{info.local_rank}"
    return torch.device(device)


def predict_arrays(model: nn.Module, images: np.ndarray, mean, std, batch_size: int = 512,
                   device: torch.device | str = "cpu", temperature: float = 1.0, amp: bool = False,
                   features: bool = False, input_size: int | None = None) -> np.ndarray:
    """Softmax probabilities (or pre-logit features) for a uint8 N x S x S x 3 array
    (:func:`fer_lab.engine.run_model` with the given mean/std; at the array's size unless ``input_size``)."""
    return run_model(model, images, features=features, batch_size=batch_size, device=device, amp=amp,
                     temperature=temperature, mean=mean, std=std, input_size=input_size)


def _lr_lambda(cfg: TrainConfig, steps_per_epoch: int):
    total = cfg.epochs * steps_per_epoch
    warm = cfg.warmup_epochs * steps_per_epoch

    def f(it: int) -> float:
        if it < warm:
            return (it + 1) / warm
        if cfg.schedule == "step":
            return cfg.gamma ** ((it // steps_per_epoch) // cfg.step_size)
        if cfg.schedule == "constant":  # SWA's: a trajectory to average (save_epochs + fer-lab soup)
            return 1.0
        t = (it - warm) / max(1, total - warm)
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
        # onecycle-like: linear warm-up over 30% then cosine down (when warmup_epochs == 0)
        if warm == 0:
            t_up = 0.3
            u = it / max(1, total)
            return max(u / t_up, 0.04) if u < t_up else 0.5 * (1 + math.cos(math.pi * (u - t_up) / (1 - t_up)))
        return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    return f


def selection_score(row: dict, select_on: str) -> float:
    """The number an epoch's checkpoint is selected on: validation accuracy, balanced accuracy, or their mean
    (``mean``: what the FER+ shipping rules and ``fer-lab prior --criterion mean`` use; its evaluation-set
    sampling noise is ~0.6x that of balanced accuracy alone, bootstrap sd 1.2 vs 2.0 points for the shipped
    EfficientFace on FER2013Test, whose rare classes have a few dozen images).  Training accuracy when
    there is no validation split."""
    if "val_acc" not in row:
        return row["train_acc"]
    if select_on == "balanced_accuracy":
        return row["val_balanced_acc"]
    if select_on == "mean":
        return 0.5 * (row["val_acc"] + row["val_balanced_acc"])
    return row["val_acc"]


def _fingerprint(path: str) -> str:
    return file_sha1(path)[:16]


def teacher_check(teacher: nn.Module, data: SplitData, label_map: LabelMap, min_acc: float | None,
                  device, mean, std, max_images: int = 4000) -> dict:
    """Refuse a teacher with another label map or near-chance accuracy (the official code's users
    got 2-4% accuracy from a permuted LDG)."""
    try:
        teacher.label_map.check_compatible(label_map, "teacher (LDG)", "student/dataset")
    except ValueError as e:
        raise TeacherRefused(str(e)) from None
    n = min(len(data), max_images)
    probs = predict_arrays(teacher, data.images[:n], mean, std, device=device, input_size=teacher_size(teacher))
    acc = float((probs.argmax(1) == data.labels[:n]).mean())
    counts = np.bincount(data.labels[:n], minlength=len(label_map))
    majority = counts.max() / max(1, n)
    threshold = min_acc if min_acc is not None else max(2.0 / len(label_map), majority + 0.1)
    if acc < threshold:
        raise TeacherRefused(f"teacher accuracy {acc:.3f} on {n} images is below {threshold:.3f} "
                             f"(chance {1 / len(label_map):.3f}, majority class {majority:.3f}); "
                             "train/fine-tune the LDG on this dataset first (fer-lab train target=hard arch=ldg_resnet50)")
    return {"teacher_acc": acc, "threshold": float(threshold), "n": int(n)}


def _teacher_mean_std(teacher):
    return tuple(teacher.meta.mean), tuple(teacher.meta.std)


def teacher_size(teacher) -> int | None:
    """The input size a *loaded* teacher was trained at (its checkpoint's ``input_size``), else ``None``.

    A model built in memory carries its registry default (224), not a size it was trained at, so it runs
    at whatever resolution it is given."""
    if not (getattr(teacher, "checkpoint_path", None) or getattr(teacher, "checkpoint_paths", None)):
        return None
    size = getattr(getattr(teacher, "meta", None), "input_size", None)
    return int(size) if size else None


def teacher_input(x: torch.Tensor, mean, std, teacher) -> torch.Tensor:
    """The student's batch ``x`` (normalised with ``mean``/``std``) as the teacher was trained to see it:
    renormalised with the teacher's own statistics and resized to the input size its checkpoint records,
    so an ``ldg-online`` teacher scores the same augmented pixels as the student (a teacher trained under
    another preset or at another resolution otherwise sees shifted or rescaled inputs, silently).  The
    cached path (:func:`cache_teacher_distributions`) runs the teacher at the same size."""
    tmean, tstd = _teacher_mean_std(teacher)
    if not (tuple(map(float, tmean)) == tuple(map(float, mean)) and tuple(map(float, tstd)) == tuple(map(float, std))):
        sm, ss, tm, ts = (torch.as_tensor(v, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
                          for v in (mean, std, tmean, tstd))
        x = (x * ss + sm - tm) / ts
    size = teacher_size(teacher)
    return x if size is None else resize_batch(x, size)


def augmented_views(images, augment, mean, std, *, seed: int, view: int, lo: int = 0, hi: int | None = None,
                    batch_size: int = 256, device=None):
    """Normalised batches of augmented view ``view`` of ``images[lo:hi]``: each chunk's augmentation is seeded by
    (seed, view, chunk start), so a view is the same whoever draws it (the LDG cache, tools/teacher_views.py)."""
    hi = len(images) if hi is None else hi
    for i in range(lo, hi, batch_size):
        j = min(hi, i + batch_size)
        xb = torch.from_numpy(np.array(images[i:j])).to(device)  # copy: memmap slices are read-only
        yield augment_batch(xb, sample_params(j - i, augment, batch_generator(seed + 7919 * view, 0, i)), mean, std)


def load_teacher(spec, device="cpu", served: bool = False) -> nn.Module:
    """The LDG of ``teacher=``: one checkpoint, or several as the mean of their probabilities; ``served``: each
    with its stored prior correction applied in ``forward`` (one checkpoint too)."""
    teacher = load_models(spec, device=device, served=served)
    if served and not isinstance(teacher, ProbabilityEnsemble):  # one checkpoint, as served
        teacher = ProbabilityEnsemble([teacher], served=True).to(device).eval()
    return to_channels_last(teacher)


def cache_teacher_distributions(teacher: nn.Module, data: SplitData, cfg: TrainConfig, device,
                                info: DistInfo = DistInfo(), cache_dir: str | os.PathLike | None = None,
                                verbose: bool = False) -> np.ndarray:
    """LDG distributions for every training image, computed once (sharded over ranks) and stored.

    ``teacher_views=1``: the clean (unaugmented) crop; ``k>1``: the mean over the clean view and
    k-1 augmented views (deterministic by seed).  Both run through the engine
    (:func:`fer_lab.engine.run_model`; the augmented batches through its loop, ``run_batches``), at the
    input size the teacher's checkpoint records (:func:`teacher_size`; the crops are resized when the
    student trains at another size, as :func:`teacher_input` does for ``ldg-online``).
    """
    paths = getattr(teacher, "checkpoint_paths", None) or [getattr(teacher, "checkpoint_path", "")]
    ident = [[p, _fingerprint(p) if p else ""] for p in paths]  # an ensemble: every member's file
    ident = ident[0] if len(ident) == 1 else ident               # one teacher: the key it always had
    parts = [*ident, data.key, cfg.teacher_views, cfg.temperature, cfg.seed]
    if getattr(teacher, "shifts", None) is not None and bool(teacher.shifts.abs().sum() > 0):
        parts.append(teacher.shifts.tolist())  # served members: their corrections (raw keeps the key it had)
    size = teacher_size(teacher) or data.images.shape[1]
    if size != data.images.shape[1]:
        parts.append(["teacher_size", size])  # a teacher trained at another resolution (same-size keys unchanged)
    key = hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:16]
    root = Path(cache_dir or os.environ.get("FER_LAB_CACHE", Path.home() / ".cache" / "fer_lab")) / "teacher"
    path = root / f"{key}.npy"
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if verbose and info.is_main else (lambda msg: None)
    if path.is_file():
        arr = np.load(path)
        if arr.shape[0] == len(data):
            say(f"teacher distributions: read from {path}")
            return arr
    members = len(paths)
    say(f"teacher distributions: running the teacher ({members} checkpoint{'s' if members > 1 else ''}, "
        f"{cfg.teacher_views} view{'s' if cfg.teacher_views > 1 else ''}) over {len(data)} training images once; "
        f"stored in {path} for later runs")
    mean, std = _teacher_mean_std(teacher)
    n = len(data)
    per = math.ceil(n / info.world_size)
    lo, hi = info.rank * per, min(n, (info.rank + 1) * per)
    bs = cfg.eval_batch_size

    out = np.zeros((per, len(data.label_map)), np.float32)
    if hi > lo:
        acc = run_model(teacher, data.images[lo:hi], batch_size=bs, device=device, temperature=cfg.temperature,
                        mean=mean, std=std, input_size=size)
        for v in range(1, cfg.teacher_views):
            views = augmented_views(data.images, cfg.augment, mean, std, seed=cfg.seed, view=v, lo=lo, hi=hi,
                                    batch_size=bs, device=device)
            views = (resize_batch(xb, size) for xb in views)
            acc = acc + run_batches(teacher, views, device=device, temperature=cfg.temperature)
        out[:hi - lo] = acc / cfg.teacher_views
    full = all_gather_cat(torch.from_numpy(out), info).numpy()[:n]
    if info.is_main:
        atomic_write(path, lambda tmp: np.save(open(tmp, "wb"), full))
    barrier()
    return full


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


class _EMA:
    def __init__(self, model: nn.Module, decay: float):
        import copy

        self.decay = decay
        self.model = copy.deepcopy(_unwrap(model)).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        src = _unwrap(model).state_dict()
        for k, v in self.model.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(self.decay).add_(src[k].detach(), alpha=1 - self.decay)
            else:
                v.copy_(src[k])


def _rng_state() -> dict:
    st = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


@dataclass
class Run:
    """Everything :func:`train_one_epoch`, :func:`validate` and :func:`save_state` need, as
    assembled by :func:`build_run` (fresh, or restored from ``last.pt``)."""
    cfg: TrainConfig
    info: DistInfo
    device: torch.device
    out: Path
    train_d: SplitData
    val_d: SplitData | None
    test_d: SplitData | None
    mean: tuple
    std: tuple
    model: nn.Module                      # the bare model: evaluation, EMA, checkpoints
    ddp_model: nn.Module                  # what the step calls: the DDP wrapper under torchrun, else `model`
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    steps: int                            # optimizer steps per epoch
    labels: torch.Tensor                  # training labels (CPU)
    dists: torch.Tensor | None            # training label distributions (CPU), if the dataset has them
    prior: torch.Tensor                   # training class prior (CPU)
    class_weights: torch.Tensor | None    # per-class loss weights on the device (class_weighting)
    ema: _EMA | None = None
    teacher: nn.Module | None = None      # ldg-online: the frozen LDG, never DDP-wrapped
    teacher_dists: torch.Tensor | None = None  # ldg-cached: N x C distributions of the training images
    teacher_info: dict = field(default_factory=dict)
    sampler: ClassBalancedSampler | None = None  # balanced_sampling
    provenance: dict = field(default_factory=dict)  # the init / teacher files this run started from (sha1)
    images_dev: torch.Tensor | None = None       # the uint8 training array kept on the device
    start_epoch: int = 0
    best: dict = field(default_factory=lambda: {"score": -1.0, "epoch": -1})
    history: list = field(default_factory=list)

    @property
    def label_map(self) -> LabelMap:
        return self.train_d.label_map

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def build_run(cfg: TrainConfig, data: dict | None = None, info: DistInfo | None = None, *,
              teacher: nn.Module | None = None, teacher_dists: torch.Tensor | None = None) -> Run:
    """Data, model, teacher, optimizer, schedule and (``cfg.resume``) the state in ``last.pt``.

    ``data`` may pass pre-loaded splits ({"train": SplitData, ...}) instead of the dataset layer.
    ``teacher`` (ldg-online) and ``teacher_dists`` (ldg-cached) pass a ready teacher or its
    distributions instead of loading, checking and caching ``cfg.teacher`` (benchmarks).
    Writes ``config.yaml`` into ``cfg.out_dir``.
    """
    import yaml

    cfg.validate()
    info = info or DistInfo()
    data = data or {}
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    elif info.enabled:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // info.world_size))
    device = resolve_device(cfg.device, info)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    out = Path(cfg.out_dir)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "config.yaml", lambda tmp: Path(tmp).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False)))

    # the global RNG draws below (model init, teacher construction) follow this seed in this order
    torch.manual_seed(cfg.seed)
    train_d = data.get("train") or load_split(cfg, cfg.train_split)
    val_d = data.get("val") if "val" in data else (load_split(cfg, cfg.val_split, False) if cfg.val_split else None)
    test_d = None if cfg.blind else (data.get("test") if "test" in data else
                                     (load_split(cfg, cfg.test_split, False) if cfg.test_split else None))
    label_map = train_d.label_map
    if len(label_map) != cfg.num_classes:
        raise ValueError(f"dataset has {len(label_map)} classes but num_classes={cfg.num_classes}")
    for d in (val_d, test_d):
        if d is not None:
            label_map.check_compatible(d.label_map, "train split", "evaluation split")
    if cfg.target in ("crowd", "true") and train_d.dists is None:
        raise ValueError(f"target {cfg.target!r} needs a dataset with label distributions ({cfg.dataset} has none)")

    model = create_model(cfg.arch, num_classes=cfg.num_classes)
    mean = tuple(cfg.mean or model.meta.mean)  # default: the architecture's registry statistics
    std = tuple(cfg.std or model.meta.std)
    state_path = out / "last.pt"
    resuming = cfg.resume and state_path.is_file()
    if cfg.init and not resuming:  # a resumed run takes its weights from last.pt: the init file may be gone
        init = load_model(cfg.init, arch=cfg.arch)
        sd = init.state_dict()
        if init.meta.num_classes != cfg.num_classes:  # a new class count: keep the fresh classifier
            head = model.default_cfg["classifier"] + "."
            sd = {k: v for k, v in sd.items() if not k.startswith(head)}
        model.load_state_dict(sd, strict=False)
    if info.enabled and cfg.sync_bn:
        # global-batch BN statistics: a DDP step then computes what one process would (up to round-off)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model) if device.type == "cuda" else convert_global_batchnorm(model)
    model.to(device)
    if cfg.channels_last:  # CPU too: 1.3x per training step on this project's machine (docs/performance.md)
        model = to_channels_last(model)

    teacher_info, cached_q, teacher_loaded = {}, None, False
    if cfg.target == "ldg-cached" and teacher_dists is not None:
        cached_q = torch.as_tensor(teacher_dists)
    elif cfg.target == "ldg-online" and teacher is not None:
        teacher.eval()
    elif cfg.target in ("ldg-online", "ldg-cached"):
        # several checkpoints: their mean probabilities; teacher_served: each with its stored prior correction
        teacher = load_teacher(cfg.teacher, device=device, served=cfg.teacher_served)
        teacher_loaded = True
        check_d = val_d if val_d is not None else train_d
        tmean, tstd = _teacher_mean_std(teacher)
        teacher_info = teacher_check(teacher, check_d, label_map, cfg.teacher_min_acc, device, tmean, tstd)
        if teacher.meta.input_size != cfg.input_size:
            teacher_info["note"] = f"teacher trained at {teacher.meta.input_size}px, student at {cfg.input_size}px"
        if cfg.progress and info.is_main:
            print(f"teacher: accuracy {teacher_info['teacher_acc']:.4f} on {teacher_info['n']} "
                  f"{'validation' if val_d is not None else 'training'} images", file=sys.stderr, flush=True)
        if cfg.target == "ldg-cached":
            cached_q = torch.from_numpy(cache_teacher_distributions(teacher, train_d, cfg, device, info,
                                                                    verbose=cfg.progress))
    if cfg.target != "ldg-online":
        teacher = None  # no teacher forward during training

    world = info.world_size
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the world size {world}")
    n = len(train_d)
    steps = n // cfg.batch_size if n >= cfg.batch_size else 1
    if cfg.max_steps_per_epoch:
        steps = min(steps, cfg.max_steps_per_epoch)
    ddp_model = model
    if info.enabled:
        ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    # the official recipe applies weight decay to every parameter (BN and biases included)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=cfg.nesterov)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, steps))
    ema = _EMA(model, cfg.ema_teacher) if cfg.ema_teacher > 0 else None

    labels = torch.as_tensor(train_d.labels)
    cw = class_weights(labels, cfg.num_classes, cfg.class_weighting, cfg.class_weight_beta)
    run = Run(cfg=cfg, info=info, device=device, out=out, train_d=train_d, val_d=val_d, test_d=test_d, mean=mean,
              std=std, model=model, ddp_model=ddp_model, optimizer=opt, scheduler=sched, steps=steps, labels=labels,
              dists=torch.as_tensor(train_d.dists) if train_d.dists is not None else None,
              prior=class_prior(labels, cfg.num_classes), class_weights=None if cw is None else cw.to(device),
              ema=ema, teacher=teacher, teacher_dists=cached_q, teacher_info=teacher_info)
    if cfg.balanced_sampling:
        # one global draw sequence per epoch; each rank takes its slice of every global batch
        run.sampler = ClassBalancedSampler(train_d.labels, steps * cfg.batch_size, seed=cfg.seed)
    if resuming:
        _load_state(run, state_path)
    # recorded when the run starts and kept in last.pt; states written before it existed: the files as found now
    run.provenance = run.provenance or _provenance(cfg, teacher_loaded, missing_ok=resuming)
    if cfg.device_cache if cfg.device_cache is not None else cuda:
        run.images_dev = torch.as_tensor(np.asarray(train_d.images)).to(device)
    return run


def save_state(run: Run, epoch: int, path: str | os.PathLike | None = None) -> None:
    """Write the resume state after ``epoch`` (0-based) atomically to ``last.pt`` (rank 0 only)."""
    if not run.info.is_main:
        return
    st = {"model": model_for_export(run.model).state_dict(), "optimizer": run.optimizer.state_dict(),
          "scheduler": run.scheduler.state_dict(), "epoch": epoch, "best": run.best, "history": run.history,
          "rng": _rng_state(), "config": json.loads(json.dumps(run.cfg.to_dict())), "provenance": run.provenance}
    if run.ema is not None:
        st["ema"] = run.ema.model.state_dict()
    atomic_write(path or run.out / "last.pt", lambda tmp: torch.save(st, tmp))


def _load_state(run: Run, path: Path) -> None:
    st = torch.load(path, map_location="cpu", weights_only=True)
    if st.get("config", {}).get("arch") != run.cfg.arch:
        raise ValueError(f"{path} belongs to a different run (arch {st.get('config', {}).get('arch')})")
    run.model.load_state_dict(st["model"])
    run.optimizer.load_state_dict(st["optimizer"])
    run.scheduler.load_state_dict(st["scheduler"])
    if run.ema is not None and "ema" in st:
        run.ema.model.load_state_dict(st["ema"])
    run.start_epoch, run.best, run.history = st["epoch"] + 1, st["best"], st["history"]
    # the files as they were when the run started (an init file may since have been overwritten, e.g. by
    # shipping this run under the init's own name)
    run.provenance = st.get("provenance") or {}
    run.best.setdefault("score", run.best.get("val_acc", -1.0))  # runs started before select_on existed
    torch.set_rng_state(st["rng"]["torch"])
    csv_path = path.parent / "metrics.csv"
    if run.info.is_main and csv_path.is_file() and run.history:
        # a kill between an epoch's CSV row and its last.pt leaves a row the resumed run repeats:
        # the CSV is rewritten from the history last.pt holds (one row per finished epoch)
        _write_csv(csv_path, run.history)


def epoch_order(run: Run, epoch: int) -> torch.Tensor:
    """The global sample order of an epoch (at least steps * batch_size indices): a function of
    (seed, epoch) alone, so a resumed or distributed run draws the same batches."""
    cfg, n = run.cfg, len(run.train_d)
    if run.sampler is not None:
        run.sampler.set_epoch(epoch)
        return run.sampler.global_draws()
    order = torch.randperm(n, generator=batch_generator(cfg.seed, epoch, -1))
    if run.steps * cfg.batch_size > n:  # tiny datasets: repeat
        order = order.repeat(math.ceil(run.steps * cfg.batch_size / n))
    return order


def compute_loss(cfg: TrainConfig, logits: torch.Tensor, labels: torch.Tensor, q: torch.Tensor | None = None,
                 ema_q: torch.Tensor | None = None, log_prior: torch.Tensor | None = None,
                 class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """The training loss of a batch: cross-entropy on ``labels`` or eq. 5 on a target distribution
    ``q``, with the one-hot/EMA mixing (hard_mix, ema_mix) and the class-imbalance switches
    (logit_adjust with ``log_prior``, per-class ``class_weights``)."""
    # train-time logit adjustment: the loss sees logits + tau*log(prior), so the raw logits
    # the model keeps for inference are pushed towards the class-balanced posterior
    z = logits + cfg.logit_adjust * log_prior if cfg.logit_adjust else logits
    hard_only = q is None and not (cfg.hard_mix or ema_q is not None)
    if hard_only and class_weights is None:
        return nn.functional.cross_entropy(z, labels)
    if q is None:
        q = torch.nn.functional.one_hot(labels, cfg.num_classes).float()
    elif cfg.temperature != 1.0 and cfg.target in ("crowd", "true", "ldg-cached"):
        q = torch.softmax(torch.log(q.clamp_min(1e-8)) / cfg.temperature, 1)
    q = mix_targets(q.float(), labels, cfg.hard_mix, ema_q, cfg.ema_mix)
    # one-hot targets keep cross_entropy's scale (mean over N) when only re-weighted
    return label_distribution_loss(z, q, "mean" if hard_only else cfg.loss_reduction, class_weights)


def _batch_images(run: Run, idx: torch.Tensor) -> torch.Tensor:
    if run.images_dev is not None:
        return run.images_dev[idx.to(run.device)]
    sidx, inv = torch.sort(idx)  # sorted reads are kinder to the memmap
    return torch.from_numpy(np.asarray(run.train_d.images[sidx.numpy()]))[torch.argsort(inv)].to(run.device)


def _stored_target(run: Run, idx: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
    """The target distribution of a batch for every source but ldg-online (None: hard labels)."""
    target = run.cfg.target
    if target == "ldg-cached":
        return run.teacher_dists[idx].to(run.device)
    if target in ("crowd", "true"):
        return run.dists[idx].to(run.device)
    if target == "smooth":
        return smooth_labels(labels, run.cfg.num_classes, run.cfg.smoothing)
    return None


def train_one_epoch(run: Run, epoch: int, max_steps: int | None = None) -> dict:
    """Run the optimizer steps of ``epoch`` (0-based; the first ``max_steps`` only if given) and
    return its row: lr, training loss and accuracy (summed over ranks), throughput."""
    from tqdm.auto import tqdm

    cfg, info, device = run.cfg, run.info, run.device
    t0 = time.time()
    run.model.train()
    order = epoch_order(run, epoch)
    local_b = cfg.batch_size // info.world_size
    sl = slice(info.rank * local_b, (info.rank + 1) * local_b)  # this rank's slice of every global batch
    log_prior = torch.log(run.prior).to(device)
    steps = run.steps if max_steps is None else min(run.steps, max_steps)
    loss_sum = torch.zeros(3, dtype=torch.float64)  # loss*count, correct, count
    bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not (cfg.progress and info.is_main),
               leave=False)
    for step in bar:
        gidx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        params = sample_params(len(gidx), cfg.augment, batch_generator(cfg.seed, epoch, step)) \
            if cfg.augment.enabled else None
        idx = gidx[sl]
        xb = _batch_images(run, idx)
        yb = run.labels[idx].to(device)
        x = augment_batch(xb, slice_params(params, sl), run.mean, run.std) if params is not None \
            else eval_batch(xb, run.mean, run.std)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and run.cuda):
            logits = run.ddp_model(x)
            if cfg.target == "ldg-online":
                # the SAME augmented batch, in the teacher's normalisation
                q = teacher_distribution(run.teacher, teacher_input(x, run.mean, run.std, run.teacher), cfg.temperature)
        logits = logits.float()
        if cfg.target != "ldg-online":
            q = _stored_target(run, idx, yb)
        ema_q = None
        if run.ema is not None and cfg.ema_mix > 0:
            with torch.no_grad():
                ema_q = torch.softmax(run.ema.model(x).float() / cfg.temperature, 1)
        loss = compute_loss(cfg, logits, yb, q, ema_q, log_prior, run.class_weights)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        run.scheduler.step()
        if run.ema is not None:
            run.ema.update(run.model)
        with torch.no_grad():
            loss_sum += torch.tensor([loss.item() * len(idx), (logits.argmax(1) == yb).sum().item(), len(idx)],
                                     dtype=torch.float64)
        if info.is_main and step % 10 == 0:
            bar.set_postfix(loss=f"{loss_sum[0] / loss_sum[2]:.4f}", acc=f"{loss_sum[1] / loss_sum[2]:.3f}")
    all_reduce_sum(loss_sum, info)
    train_time = time.time() - t0
    return {"epoch": epoch + 1, "lr": run.optimizer.param_groups[0]["lr"], "train_loss": float(loss_sum[0] / loss_sum[2]),
            "train_acc": float(loss_sum[1] / loss_sum[2]), "img_per_s": float(loss_sum[2] / train_time),
            "epoch_time_s": train_time}


def validate(run: Run, data: SplitData | None) -> dict | None:
    """Classification metrics of the current model on ``data`` (rank 0; None elsewhere or without data),
    plus the soft cross-entropy against the split's label distributions where it has them."""
    if data is None or not run.info.is_main:
        return None
    probs = predict_arrays(run.model, data.images, run.mean, run.std, run.cfg.eval_batch_size, run.device,
                           amp=run.cfg.amp)
    m = classification_metrics(probs, data.labels)
    if data.dists is not None:
        m["soft_ce_vs_dist"] = soft_cross_entropy(probs, data.dists)
    return m


def train(cfg: TrainConfig, *, data: dict | None = None) -> dict:
    """Run (or resume) a training run described by ``cfg``; returns the final summary.

    ``data`` may pass pre-loaded splits ({"train": SplitData, ...}) instead of the dataset layer.
    Writes into ``cfg.out_dir``: config.yaml, metrics.csv, last.pt (resume state), best.safetensors
    (selected on validation), model.safetensors (final export = best), summary.json; with
    ``save_epochs`` also epochs/epoch_NNN.safetensors after every epoch.
    """
    cfg.validate()
    info = init_distributed("cuda" if (cfg.device == "auto" and torch.cuda.is_available()) or cfg.device.startswith("cuda") else "cpu")
    try:
        return _train(cfg, info, data or {})
    finally:
        cleanup()


def _train(cfg: TrainConfig, info: DistInfo, data: dict) -> dict:
    run = build_run(cfg, data, info)
    tb = None
    if cfg.tensorboard and info.is_main:
        from torch.utils.tensorboard import SummaryWriter

        tb = SummaryWriter(str(run.out / "tb"))
    for epoch in range(run.start_epoch, cfg.epochs):
        row = train_one_epoch(run, epoch)
        vm = validate(run, run.val_d)
        if vm:
            row.update(val_acc=vm["accuracy"], val_balanced_acc=vm["balanced_accuracy"], val_nll=vm["nll"], val_ece=vm["ece"])
        if cfg.track_test:
            tm = validate(run, run.test_d)
            if tm:
                row.update(test_acc=tm["accuracy"])
        if info.is_main:
            run.history.append(row)
            score = selection_score(row, cfg.select_on)
            if score > run.best["score"]:
                run.best = {"score": score, "epoch": epoch + 1, "metric": cfg.select_on}
                save_model(model_for_export(run.model), run.out / "best.safetensors",
                           _meta(cfg, run.label_map, run.mean, run.std, {"selected_on": "val" if vm else "train", **row},
                                 provenance=run.provenance))
            if cfg.save_epochs:  # the trajectory, for weight averaging (fer-lab soup --method uniform: SWA)
                (run.out / "epochs").mkdir(exist_ok=True)
                save_model(model_for_export(run.model), run.out / "epochs" / f"epoch_{epoch + 1:03d}.safetensors",
                           _meta(cfg, run.label_map, run.mean, run.std, {"epoch": epoch + 1, **row},
                                 provenance=run.provenance))
            _append_csv(run.out / "metrics.csv", row)
            if tb is not None:
                for k, v in row.items():
                    tb.add_scalar(k, v, epoch + 1)
            save_state(run, epoch)
            if cfg.progress:
                print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
        barrier()
    summary = _finish(run) if info.is_main else {}
    barrier()
    return summary


def _write_csv(path: Path, rows: list[dict]) -> None:
    def write(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def _finish(run: Run) -> dict:
    """Final exports (rank 0): test the last and the selected model, choose the post-hoc prior
    correction on validation, write model.safetensors (= best) and summary.json."""
    cfg, out, model = run.cfg, run.out, run.model
    final_state = {k: v.clone() for k, v in model_for_export(model).state_dict().items()}
    last_test = validate(run, run.test_d)
    best_model = to_channels_last(load_model(out / "best.safetensors", device=run.device))
    model_for_export(model).load_state_dict(best_model.state_dict())
    sel_test = validate(run, run.test_d)
    sel_val = validate(run, run.val_d)
    prior_correction = {}
    if (cfg.posthoc_prior != "none" or cfg.posthoc_temperature) and run.val_d is not None:
        pv = predict_arrays(model, run.val_d.images, run.mean, run.std, cfg.eval_batch_size, run.device, amp=cfg.amp)
        sweep = cfg.posthoc_prior != "none"  # without a tau sweep: tau fixed at 0, the temperature alone
        prior_correction = fit_prior_correction_from_probs(
            pv, run.val_d.labels, run.prior.numpy(), cfg.posthoc_prior if sweep else "mean", cfg.val_split or "val",
            PRIOR_TAUS if sweep else (0.0,), temperature=cfg.posthoc_temperature)
    history, best = run.history, run.best
    summary = {
        "config": cfg.to_dict(), "label_map": run.label_map.to_list(), "teacher": run.teacher_info,
        "best_epoch": best["epoch"], "selected_on": cfg.select_on, "blind": cfg.blind,
        "val_selected": {"val": _brief(sel_val), "test": _brief(sel_test)},
        "last_epoch": {"test": _brief(last_test)}, "prior_correction": prior_correction,
    }
    if cfg.track_test and history and "test_acc" in history[0]:
        bt = max(history, key=lambda r: r["test_acc"])
        summary["best_on_test_official_protocol"] = {"epoch": bt["epoch"], "test_acc": bt["test_acc"],
                                                     "note": "selected on the test split like the official code; not a valid estimate"}
    metrics = {"val_acc": sel_val and sel_val["accuracy"], "test_acc": sel_test and sel_test["accuracy"],
               "test_balanced_acc": sel_test and sel_test["balanced_accuracy"], "best_epoch": best["epoch"],
               "selected_on": cfg.select_on}
    save_model(model_for_export(model), out / "model.safetensors",
               _meta(cfg, run.label_map, run.mean, run.std, metrics, prior_correction, run.provenance))
    model_for_export(model).load_state_dict(final_state)
    atomic_write(out / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2, default=str)))
    return summary


def model_for_export(model: nn.Module) -> nn.Module:
    """The bare model under a DDP wrapper (what checkpoints and exports hold)."""
    return _unwrap(model)


def _brief(m: dict | None) -> dict | None:
    if m is None:
        return None
    return {k: m[k] for k in ("n", "accuracy", "balanced_accuracy", "macro_f1", "nll", "ece", "soft_ce_vs_dist") if k in m}


def _provenance(cfg: TrainConfig, teacher_loaded: bool, missing_ok: bool = False) -> dict:
    """``{"init": {"path", "sha1"}, "teacher": [{"path", "sha1"}, ...]}`` for the files a run reads
    weights from, hashed when it starts: the checkpoint then names its real parents even after a
    file is replaced (``init=`` paths are stored as given in ``train_config``)."""
    def ident(spec):
        try:
            return {"path": str(spec), "sha1": file_sha1(resolve_weights(spec))}
        except (OSError, CheckpointError):
            if not missing_ok:
                raise
            return {"path": str(spec), "sha1": None}

    out = {}
    if cfg.init:
        out["init"] = ident(cfg.init)
    if teacher_loaded:  # not a teacher handed in ready-made (benchmarks)
        out["teacher"] = [ident(p) for p in split_checkpoint_spec(cfg.teacher)]
    return out


def _meta(cfg: TrainConfig, label_map: LabelMap, mean, std, metrics: dict, prior_correction: dict | None = None,
          provenance: dict | None = None) -> ModelMeta:
    tc = json.loads(json.dumps(cfg.to_dict(), default=str))
    if provenance:
        tc["provenance"] = provenance
    return ModelMeta(arch=cfg.arch, labels=label_map.to_list(), input_size=cfg.input_size, mean=tuple(mean),
                     std=tuple(std), grayscale=cfg.grayscale, dataset=cfg.dataset,
                     crop={"recipe": cfg.photo_recipe or cfg.recipe, "train_recipe": cfg.recipe},
                     metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float, str, type(None)))},
                     prior_correction=dict(prior_correction or {}),
                     train_config=tc)
