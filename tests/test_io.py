"""fer_lab.io.load_image: formats, orientation, limits and clean errors."""
import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from fer_lab.io import ImageLoadError, load_image


def _png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def _png_header_bomb(w: int, h: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def gradient():
    y, x = np.mgrid[0:40, 0:60]
    return np.stack([x * 4, y * 6, np.full_like(x, 90)], axis=2).astype(np.uint8)


def test_sources_agree(tmp_path, gradient):
    data = _encode(Image.fromarray(gradient), "PNG")
    path = tmp_path / "g.png"
    path.write_bytes(data)
    outs = [load_image(path), load_image(str(path)), load_image(data), load_image(io.BytesIO(data)),
            load_image(Image.fromarray(gradient)), load_image(gradient)]
    for out in outs:
        assert out.dtype == np.uint8 and out.shape == (40, 60, 3)
        np.testing.assert_array_equal(out, gradient)


def test_grayscale_rgba_palette_cmyk():
    gray = load_image(_encode(Image.new("L", (8, 6), 77), "PNG"))
    assert gray.shape == (6, 8, 3) and (gray == 77).all()
    # transparent pixels composite on white, opaque ones keep their colour
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255
    out = load_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    np.testing.assert_array_equal(out[0, 0], [200, 0, 0])
    np.testing.assert_array_equal(out[3, 3], [255, 255, 255])
    np.testing.assert_array_equal(load_image(rgba)[3, 3], [255, 255, 255])  # arrays follow the same rule
    half = load_image(_encode(Image.new("LA", (3, 3), (0, 128)), "PNG"))
    assert abs(int(half[0, 0, 0]) - 127) <= 1
    pal = Image.new("P", (5, 5), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    np.testing.assert_array_equal(load_image(_encode(pal, "PNG"))[2, 2], [10, 200, 30])
    cmyk = load_image(_encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95))
    assert cmyk[8, 8, 0] > 230 and cmyk[8, 8, 1] < 25 and cmyk[8, 8, 2] < 25  # pure red


def test_16bit_png_scaled_by_full_range_not_max():
    a = np.full((10, 10), 65535 // 4, np.uint16)  # a dark image must stay dark
    a[0, 0] = 65535 // 2
    out = load_image(_encode(Image.fromarray(a), "PNG"))
    assert out[5, 5, 0] == round(65535 // 4 / 257) and out[0, 0, 0] == round(65535 // 2 / 257)
    np.testing.assert_array_equal(load_image(a), out)


def test_exif_orientation_applied():
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    out = load_image(_encode(Image.fromarray(img), "JPEG", exif=exif, quality=95))
    assert out.shape == (40, 20, 3)
    assert out[5, 10].mean() > 200 and out[35, 10].mean() < 50  # white half now on top


def test_animated_gif_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50)
    out = load_image(buf.getvalue())
    assert out[4, 4, 0] > 200 and out[4, 4, 2] < 50


def test_bad_inputs_raise_clean_errors(tmp_path):
    good = _encode(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")
    with pytest.raises(ImageLoadError, match="empty"):
        load_image(b"")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty"):
        load_image(empty)
    with pytest.raises(ImageLoadError, match="not an image"):
        load_image(b"%PDF-1.4 definitely not a picture" * 10)
    with pytest.raises(ImageLoadError, match="truncated or corrupt"):
        load_image(good[: len(good) // 3])
    png = _encode(Image.new("RGB", (64, 64), (1, 2, 3)), "PNG")
    with pytest.raises(ImageLoadError):
        load_image(png[:60])
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageLoadError, match="limit"):
        load_image(good, max_bytes=100)
    with pytest.raises(ImageLoadError, match="shape"):
        load_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(TypeError):
        load_image(12345)
    assert issubclass(ImageLoadError, ValueError)


def test_decompression_bomb_refused_without_touching_pil_globals():
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    # header-only PNGs: 144 MP (PIL would warn) and 400 MP (PIL raises); a few hundred bytes each
    for side in (12000, 20000):
        bomb = _png_header_bomb(side, side)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no DecompressionBombWarning may escape either
            with pytest.raises(ImageLoadError, match="decompression bomb"):
                load_image(bomb)
    # above PIL's own hard limit (~179 MP) the message is ours too: the size, the limit, what to do
    with pytest.raises(ImageLoadError, match=r"400\.0 MP; the limit is 120\.0 MP .*downscale"):
        load_image(_png_header_bomb(20000, 20000))
    small = _encode(Image.new("RGB", (300, 300)), "PNG")
    with pytest.raises(ImageLoadError, match="MP"):
        load_image(small, max_pixels=50_000)
    assert load_image(small).shape == (300, 300, 3)
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == before
