"""Training: SLL, label-distribution learning (LDG online/cached, crowd votes, smoothing), DDP;
augmentation of uint8 batches on the device in :mod:`fer_lab.training.augment`."""
from .config import TrainConfig, apply_overrides, list_presets, load_config
from .loop import (Run, SplitData, TeacherRefused, build_run, cache_teacher_distributions, compute_loss, load_split,
                   predict_arrays, save_state, train, train_one_epoch, validate)
from .targets import label_distribution_loss
from .bench import benchmark_training

__all__ = ["TrainConfig", "load_config", "apply_overrides", "list_presets", "train", "Run", "build_run",
           "train_one_epoch", "validate", "save_state", "compute_loss", "SplitData", "load_split",
           "predict_arrays", "TeacherRefused", "cache_teacher_distributions", "label_distribution_loss",
           "benchmark_training"]
