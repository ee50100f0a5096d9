"""Datasets in their native layouts, the decode-once array cache, sampling and checks, and
synthfer (:mod:`fer_lab.data.synthfer`, procedural faces with ground-truth label distributions).

>>> ds = build_dataset("ferplus", "/data/ferplus", "train")          # FERDataset
>>> cache = build_cache(ds, 112)                                    # ArrayCache (memmap), a FaceSet

See ``docs/data.md`` for the layouts each adapter reads and the label rules.
"""
from .base import (DATA_LAYER_VERSION, FERDataset, Problem, Record, build_dataset, list_datasets,
                   register_dataset)
from .cache import ArrayCache, build_cache, cache_key, cache_root
from .faceset import FaceSet, as_face_set
from .subset import match_subset, read_subset_list
from .check import check_dataset, distribution_summary, verify_images
from .sampler import ClassBalancedSampler, class_balanced_sampler

# adapters register themselves on import
from . import adapters, ferplus, synthetic  # noqa: E402,F401

__all__ = ["FaceSet", "as_face_set", "read_subset_list", "match_subset", "FERDataset", "Problem", "Record", "build_dataset", "list_datasets", "register_dataset",
           "ArrayCache", "build_cache", "cache_key", "cache_root", "DATA_LAYER_VERSION",
           "check_dataset", "distribution_summary", "verify_images",
           "ClassBalancedSampler", "class_balanced_sampler"]
