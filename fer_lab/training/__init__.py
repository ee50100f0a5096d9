"""Training: SLL, label-distribution learning (LDG online/cached, crowd votes, smoothing), DDP."""
from .config import TrainConfig, apply_overrides, list_presets, load_config
from .loop import SplitData, TeacherRefused, cache_teacher_distributions, load_split, predict_arrays, train
from .targets import label_distribution_loss
from .bench import benchmark_training

__all__ = ["TrainConfig", "load_config", "apply_overrides", "list_presets", "train", "SplitData", "load_split",
           "predict_arrays", "TeacherRefused", "cache_teacher_distributions", "label_distribution_loss",
           "benchmark_training"]
