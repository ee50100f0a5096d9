"""Class-balanced sampler: measured class frequencies, DDP shares, epoch reseeding."""
import numpy as np
import pytest

from fer_lab.data import class_balanced_sampler


def imbalanced(seed=0):
    # AffectNet-like: 50% / 25% / 15% / 7% / 2.5% / 0.5% ; class 6 absent
    sizes = [5000, 2500, 1500, 700, 250, 50, 0, 10]
    return np.repeat(np.arange(8), sizes)


def test_draws_are_class_balanced():
    labels = imbalanced()
    s = class_balanced_sampler(labels, num_samples=40_000, seed=1)
    idx = np.fromiter(iter(s), dtype=np.int64)
    assert len(idx) == len(s) == 40_000 and idx.min() >= 0 and idx.max() < len(labels)
    freq = np.bincount(labels[idx], minlength=8) / len(idx)
    present = np.bincount(labels) > 0
    assert freq[6] == 0  # an absent class is never drawn
    np.testing.assert_allclose(freq[present], 1 / present.sum(), atol=0.01)  # 1/7 +- 1 point
    assert len(class_balanced_sampler(labels)) == len(labels)  # default epoch = dataset size


def test_ddp_shares_are_disjoint_and_cover_the_global_draw():
    labels = imbalanced()
    full = list(class_balanced_sampler(labels, num_samples=1004, seed=7))  # the padded global stream
    shares = [list(class_balanced_sampler(labels, num_samples=1001, seed=7, rank=r, world_size=4)) for r in range(4)]
    assert {len(s) for s in shares} == {251}  # equal lengths (padded to 1004 draws)
    positions = sorted((k * 4 + r, v) for r, s in enumerate(shares) for k, v in enumerate(s))
    assert [p for p, _ in positions] == list(range(1004))  # each global draw goes to exactly one rank
    assert [v for _, v in positions] == full  # rank r takes global draws r, r+4, r+8, ...


def test_set_epoch_reseeds_deterministically():
    labels = imbalanced()
    a, b = class_balanced_sampler(labels, 500, seed=3), class_balanced_sampler(labels, 500, seed=3)
    e0 = list(a)
    a.set_epoch(1)
    e1 = list(a)
    b.set_epoch(1)
    assert e0 != e1 and e1 == list(b) and list(a) == e1


def test_global_draws_are_the_trainers_draws():
    """The trainer's balanced_sampling order: multinomial over float32 1/count weights from
    batch_generator(seed, epoch, -1); the DataLoader shares are strided slices of the same stream."""
    import torch

    from fer_lab.training.augment import batch_generator
    from fer_lab.data import ClassBalancedSampler

    labels = imbalanced()
    t = torch.as_tensor(labels)
    weights = (1.0 / torch.bincount(t).float().clamp(min=1))[t]
    s = ClassBalancedSampler(labels, 640, seed=4)
    s.set_epoch(2)
    want = torch.multinomial(weights, 640, replacement=True, generator=batch_generator(4, 2, -1))
    assert torch.equal(s.global_draws(), want) and list(s) == want.tolist()
    r1 = ClassBalancedSampler(labels, 640, seed=4, rank=1, world_size=2)
    r1.set_epoch(2)
    assert list(r1) == want[1::2].tolist()


def test_bad_arguments():
    with pytest.raises(ValueError, match="rank"):
        class_balanced_sampler([0, 1], rank=2, world_size=2)
    with pytest.raises(ValueError, match="non-negative"):
        class_balanced_sampler([0, -1])
    with pytest.raises(ValueError, match="non-empty"):
        class_balanced_sampler([])
    with pytest.raises(ValueError, match="num_samples"):
        class_balanced_sampler([0, 1], num_samples=0)
