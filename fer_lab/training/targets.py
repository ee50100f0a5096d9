"""Distribution sources ("targets") and the label-distribution loss (paper eq. 5)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["label_distribution_loss", "class_prior", "class_weights", "one_hot", "smooth_labels", "teacher_distribution", "mix_targets"]


def label_distribution_loss(logits: torch.Tensor, target: torch.Tensor, reduction: str = "paper",
                            class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy between a target distribution d and the prediction softmax(logits).

    ``reduction="paper"``: L = -1/(N*C) sum_i sum_j d_ij log p_ij, exactly eq. (5) of the paper
    (the official code's ``mean(-q * log p)`` over all N*C elements); computed with
    ``log_softmax`` (the official ``log(softmax)`` can give nan when a probability underflows).
    ``reduction="mean"``: the usual soft cross-entropy, averaged over N only (C times larger).
    ``class_weights``: C weights multiplying each class's term (re-weights the distribution rather
    than replacing it by a hard label; with a one-hot target it is the usual weighted CE).
    """
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ")
    per_elem = -target * F.log_softmax(logits.float(), dim=1)
    if class_weights is not None:
        per_elem = per_elem * class_weights.to(per_elem).view(1, -1)
    if reduction == "paper":
        return per_elem.mean()
    if reduction == "mean":
        return per_elem.sum(1).mean()
    raise ValueError(f"unknown reduction {reduction!r}")


def class_prior(labels, num_classes: int) -> torch.Tensor:
    """Training-set class frequencies (every class at least one count, so log prior is finite)."""
    counts = torch.bincount(torch.as_tensor(labels).long().view(-1), minlength=num_classes).double()
    return (counts.clamp_min(1) / counts.clamp_min(1).sum()).float()


def class_weights(labels, num_classes: int, kind: str = "inverse", beta: float = 0.999) -> torch.Tensor | None:
    """Per-class loss weights against class imbalance, normalised so an average training sample
    weighs 1 (the loss scale, hence the learning rate, stays comparable to unweighted training).

    ``inverse``: 1 / frequency.  ``effective``: (1 - beta) / (1 - beta ** count), the "effective
    number of samples" of Cui et al. (CVPR 2019), between no weighting (beta=0) and inverse (beta->1).
    """
    if kind == "none":
        return None
    counts = torch.bincount(torch.as_tensor(labels).long().view(-1), minlength=num_classes).double().clamp_min(1)
    if kind == "inverse":
        w = 1.0 / counts
    elif kind == "effective":
        w = (1.0 - beta) / (1.0 - beta ** counts)
    else:
        raise ValueError(f"unknown class weighting {kind!r}; choose none, inverse or effective")
    prior = counts / counts.sum()
    return (w / (prior * w).sum()).float()


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return F.one_hot(labels.long(), num_classes).float()


def smooth_labels(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    return one_hot(labels, num_classes) * (1 - smoothing) + smoothing / num_classes


@torch.no_grad()
def teacher_distribution(teacher: torch.nn.Module, x: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """softmax(LDG(x)/T) with the teacher frozen in eval mode (paper eq. 4, T=1)."""
    if teacher.training:
        teacher.eval()
    return F.softmax(teacher(x).float() / temperature, dim=1)


def mix_targets(q: torch.Tensor, labels: torch.Tensor, hard_mix: float = 0.0,
                ema_q: torch.Tensor | None = None, ema_mix: float = 0.0) -> torch.Tensor:
    """(1 - hard_mix - ema_mix) * q + hard_mix * onehot + ema_mix * ema_q."""
    out = q * (1.0 - hard_mix - (ema_mix if ema_q is not None else 0.0))
    if hard_mix:
        out = out + hard_mix * one_hot(labels, q.shape[1]).to(q)
    if ema_q is not None and ema_mix:
        out = out + ema_mix * ema_q
    return out
