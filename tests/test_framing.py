"""Framing and photometric perturbations (fer_lab.analysis.robustness): what real uploads differ in."""
import numpy as np
import pytest

from fer_lab.analysis.robustness import FRAMING_CONDITIONS, adjust_gamma, perturb, reframe, to_grayscale


def _face(size=32):
    y, x = np.mgrid[:size, :size]
    f = np.zeros((size, size, 3), np.uint8)
    f[..., 0] = (x * 255 // (size - 1)).astype(np.uint8)      # horizontal ramp in red
    f[..., 1] = (y * 255 // (size - 1)).astype(np.uint8)      # vertical ramp in green
    f[..., 2] = 128
    return f


def test_reframe_tight_and_loose():
    f = _face()
    tight = reframe(f[None], 0.5)[0]
    assert tight.shape == f.shape
    # the central half stretched to the full side: the red ramp now spans ~64..191 instead of 0..255
    assert 40 < tight[16, 0, 0] < 90 and 165 < tight[16, -1, 0] < 215
    loose = reframe(f[None], 1.4)[0]
    assert loose.shape == f.shape
    # the original fills the middle 1/1.4 of the side; the margin mirrors it, so the edges are not 0/255
    assert abs(int(loose[16, 16, 0]) - int(f[16, 16, 0])) <= 12
    assert loose[16, 0, 0] > 20 and loose[16, -1, 0] < 235
    np.testing.assert_array_equal(reframe(f[None], 1.0)[0], f)
    with pytest.raises(ValueError):
        reframe(f[None], 0.1)


def test_gamma_and_grayscale():
    f = _face()
    np.testing.assert_array_equal(adjust_gamma(f[None], 1.0)[0], f)
    bright, dark = adjust_gamma(f[None], 0.6)[0], adjust_gamma(f[None], 1.6)[0]
    assert bright.mean() > f.mean() > dark.mean()
    assert bright[0, 0, 0] == 0 and bright[-1, -1, 0] == 255          # end points stay
    g = to_grayscale(f[None], 1.0)[0]
    assert (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()
    gray_in = np.repeat(f[..., :1], 3, axis=2)
    np.testing.assert_array_equal(to_grayscale(gray_in[None], 1.0)[0], gray_in)  # gray stays gray
    with pytest.raises(ValueError):
        adjust_gamma(f[None], 0.0)


def test_framing_conditions_are_registered_perturbations():
    faces = np.stack([_face(), _face()[::-1].copy()])
    for kind, strength in FRAMING_CONDITIONS:
        out = perturb(faces, kind, strength)
        assert out.shape == faces.shape and out.dtype == np.uint8
    kinds = {k for k, _ in FRAMING_CONDITIONS}
    assert kinds == {"tight_crop", "loose_crop", "grayscale", "gamma"}
    # loose_crop 0.2 = 20% margin on every side = the face fills 1/1.4 of the side
    np.testing.assert_array_equal(perturb(faces, "loose_crop", 0.2), reframe(faces, 1.4))
