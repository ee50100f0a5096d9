"""Training configuration: a plain dataclass, YAML files and ``key=value`` overrides."""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .augment import AugmentConfig

SELECT_ON = ("accuracy", "balanced_accuracy", "mean")

__all__ = ["TrainConfig", "SELECT_ON", "load_config", "apply_overrides", "CONFIG_DIR", "list_presets"]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

TARGETS = ("hard", "ldg-online", "ldg-cached", "crowd", "smooth", "true")


@dataclass
class TrainConfig:
    # model
    arch: str = "efficientface"
    num_classes: int = 7
    input_size: int = 64
    grayscale: bool = False
    mean: tuple | None = None          # None: the model's default (RAF-DB statistics for EfficientFace)
    std: tuple | None = None
    init: str | None = None            # checkpoint to initialise from (e.g. MS-Celeb pretraining)
    # data
    dataset: str = "synthfer"
    root: str | None = None
    dataset_kwargs: dict = field(default_factory=dict)
    split_kwargs: dict = field(default_factory=dict)   # per split overrides {"train": {...}}
    train_split: str = "train"
    val_split: str | None = "val"
    test_split: str | None = "test"
    recipe: str = "none"               # face-crop recipe for the cache (fer_lab.faces); "none" for pre-cropped datasets
    photo_recipe: str | None = None    # recipe that reproduces this framing from a photo (inference); default: recipe
    balanced_sampling: bool = False
    # class imbalance (docs/training.md, "Class imbalance"); all combine with distribution targets
    class_weighting: str = "none"      # none | inverse | effective (Cui et al. 2019, class_weight_beta)
    class_weight_beta: float = 0.999
    logit_adjust: float = 0.0          # train-time logit adjustment tau (Menon et al. 2021): loss on logits + tau*log prior
    posthoc_prior: str = "none"        # none | balanced | mean: choose an inference-time prior correction tau on
                                       # validation (max balanced accuracy, or max mean of accuracy and balanced
                                       # accuracy); stored in the checkpoint, applied by Predictor/predict/eval/app
    posthoc_temperature: bool = False  # also fit a calibration temperature on validation after that tau (lowest NLL;
                                       # never changes a prediction), stored and applied the same way
    select_on: str = "accuracy"        # accuracy | balanced_accuracy | mean (of the two): validation metric that selects best.safetensors
    # targets ("distribution sources")
    target: str = "hard"
    teacher: str | None = None         # LDG checkpoint (ldg-online / ldg-cached); "a,b,...": an ensemble (mean probabilities)
    teacher_served: bool = False       # the teacher as it is served: each checkpoint (each ensemble member) with its
                                       # stored post-hoc prior correction before the mean (default: raw probabilities)
    teacher_views: int = 1             # ldg-cached: average over this many augmented views (1 = clean view)
    teacher_min_acc: float | None = None  # refuse a teacher below this val accuracy (default: well above chance)
    temperature: float = 1.0
    hard_mix: float = 0.0              # weight of the one-hot label mixed into any distribution target
    smoothing: float = 0.1             # 'smooth' source
    ema_teacher: float = 0.0           # >0: EMA-of-student teacher with this decay, mixed in with ema_mix
    ema_mix: float = 0.0
    loss_reduction: str = "paper"      # distribution targets: "paper" = eq. 5, mean over N*C; "mean" = over N
    # optimisation (paper defaults)
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    schedule: str = "step"             # step | cosine | onecycle | constant (after warm-up; SWA's)
    step_size: int = 10
    gamma: float = 0.1
    warmup_epochs: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # run
    seed: int = 0
    device: str = "auto"
    amp: bool = True                   # CUDA only (bf16)
    channels_last: bool = True         # NHWC weights and batches, CPU and CUDA (faster, same results to ~1e-9)
    sync_bn: bool = True               # under DDP: global-batch BN statistics (matches one process up to round-off)
    out_dir: str = "runs/run"
    resume: bool = True
    track_test: bool = False           # also evaluate test every epoch (official protocol: best-on-test, labelled)
    blind: bool = False                # compute no test number at all (pre-registered runs): switches track_test off
                                       # and test_split to null, whatever the preset says
    save_epochs: bool = False          # also write epochs/epoch_NNN.safetensors after every epoch (weight averaging: fer-lab soup)
    max_steps_per_epoch: int | None = None
    num_threads: int | None = None
    progress: bool = True
    tensorboard: bool = False
    eval_batch_size: int = 512
    device_cache: bool | None = None   # keep the whole uint8 train array on the device (default: on CUDA)

    def validate(self) -> "TrainConfig":
        if self.blind:  # a preset's track_test: true / test_split: test must not leak a test number into the run
            self.track_test, self.test_split = False, None
        if self.target not in TARGETS:
            raise ValueError(f"unknown target {self.target!r}; choose from {TARGETS}")
        if self.target in ("ldg-online", "ldg-cached") and not self.teacher:
            raise ValueError(f"target {self.target!r} needs teacher=<LDG checkpoint>")
        if self.schedule not in ("step", "cosine", "onecycle", "constant"):
            raise ValueError(f"unknown schedule {self.schedule!r}")
        if self.loss_reduction not in ("paper", "mean"):
            raise ValueError("loss_reduction must be 'paper' or 'mean'")
        if not 0 <= self.hard_mix <= 1 or not 0 <= self.ema_mix <= 1 or self.hard_mix + self.ema_mix > 1:
            raise ValueError("hard_mix and ema_mix must be in [0,1] and sum to <= 1")
        if self.class_weighting not in ("none", "inverse", "effective"):
            raise ValueError("class_weighting must be 'none', 'inverse' or 'effective'")
        if not 0 <= self.class_weight_beta < 1:
            raise ValueError("class_weight_beta must be in [0, 1)")
        if self.posthoc_prior not in ("none", "balanced", "mean"):
            raise ValueError("posthoc_prior must be 'none', 'balanced' or 'mean'")
        if self.select_on not in SELECT_ON:
            raise ValueError(f"select_on must be one of {', '.join(SELECT_ON)}, got {self.select_on!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def _coerce(value: str, current: Any):
    if isinstance(current, str):  # keep strings as typed ("true" is a target name, not a bool)
        return None if value in ("null", "None", "~", "") else value
    parsed = yaml.safe_load(value)
    if isinstance(current, tuple) and isinstance(parsed, list):
        return tuple(parsed)
    if isinstance(current, float) and isinstance(parsed, int):
        return float(parsed)
    return parsed


def apply_overrides(cfg: TrainConfig, overrides: list[str] | dict) -> TrainConfig:
    """``["lr=0.05", "augment.rotate=5", "dataset_kwargs.n=500"]`` or a dict of the same."""
    items = overrides.items() if isinstance(overrides, dict) else [o.split("=", 1) for o in overrides]
    for item in items:
        if len(item) != 2:
            raise ValueError(f"override {item!r} is not key=value")
        key, value = item
        target, parts = cfg, key.split(".")
        for p in parts[:-1]:
            target = getattr(target, p) if not isinstance(target, dict) else target.setdefault(p, {})
        last = parts[-1]
        if isinstance(target, dict):
            target[last] = _coerce(value, None) if isinstance(value, str) else value
        else:
            if not hasattr(target, last):
                raise ValueError(f"unknown config key {key!r}")
            cur = getattr(target, last)
            setattr(target, last, _coerce(value, cur) if isinstance(value, str) else value)
    return cfg


def _from_dict(d: dict) -> TrainConfig:
    d = dict(d)
    aug = d.pop("augment", None) or {}
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown config keys: {sorted(unknown)}")
    cfg = TrainConfig(**d)
    cfg.augment = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in aug.items()})
    for k in ("mean", "std"):
        if isinstance(getattr(cfg, k), list):
            setattr(cfg, k, tuple(getattr(cfg, k)))
    return cfg


def list_presets() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_config(path_or_preset: str | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """A YAML file, a preset name from fer_lab/training/configs/, or defaults; then overrides."""
    if path_or_preset is None:
        cfg = TrainConfig()
    else:
        p = Path(path_or_preset)
        if not p.is_file():
            p = CONFIG_DIR / f"{path_or_preset}.yaml"
        if not p.is_file():
            raise FileNotFoundError(f"no config file or preset {path_or_preset!r} (presets: {list_presets()})")
        cfg = _from_dict(yaml.safe_load(p.read_text()) or {})
    return apply_overrides(cfg, overrides or []).validate()
