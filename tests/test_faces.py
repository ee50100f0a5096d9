"""fer_lab.faces: Haar detection, crop recipes and the single crop path."""
import io
import time

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from fer_lab.faces import (CropRecipe, Face, crop_face, detect_faces, extract_faces, framing_stats,
                           get_recipe, list_recipes)
from fer_lab.io import load_image

ASTRO_FACE = (176, 66, 99, 99)  # the one face in skimage's astronaut (public domain), x y w h


@pytest.fixture(scope="module")
def astronaut():
    return data.astronaut()


def _iou(a, b):
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / (a[2] * a[3] + b[2] * b[3] - ix * iy)


def test_astronaut_one_face(astronaut):
    faces = detect_faces(astronaut)
    assert len(faces) == 1
    assert _iou(faces[0].box, ASTRO_FACE) > 0.7
    assert faces[0].score >= 3


def test_group_photo_several_scales(astronaut):
    face = astronaut[30:250, 140:380]
    canvas = np.full((600, 800, 3), 190, np.uint8)
    placed = [(20, 20, 300), (380, 60, 220), (560, 330, 180), (120, 360, 200)]
    for x, y, s in placed:
        canvas[y:y + s, x:x + s] = cv2.resize(face, (s, s), interpolation=cv2.INTER_AREA)
    faces = detect_faces(canvas)
    assert len(faces) >= 3
    areas = [f.area for f in faces]
    assert areas == sorted(areas, reverse=True)
    # every detection lies inside one pasted tile: no false positives on the canvas
    for f in faces:
        cx, cy = f.center
        assert any(x <= cx <= x + s and y <= cy <= y + s for x, y, s in placed)
    assert len(detect_faces(canvas, max_faces=2)) == 2


def test_no_face_on_blank_and_noise():
    rng = np.random.default_rng(0)
    assert detect_faces(np.full((240, 320, 3), 128, np.uint8)) == []
    assert detect_faces(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)) == []
    assert extract_faces(np.zeros((100, 100, 3), np.uint8)) == []
    fb = extract_faces(np.zeros((100, 100, 3), np.uint8), fallback_whole=True)
    assert len(fb) == 1 and fb[0][0] is None and fb[0][1].shape == (100, 100, 3)


def test_tiny_face_image_is_upscaled(astronaut):
    tiny = cv2.resize(astronaut[40:240, 150:350], (48, 48), interpolation=cv2.INTER_AREA)
    faces = detect_faces(tiny)
    assert len(faces) == 1
    x, y, w, h = faces[0].box
    assert 15 <= w <= 48 and 0 <= x and x + w <= 48


def test_large_image_boxes_mapped_back(astronaut):
    big = cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_LINEAR)
    faces = detect_faces(big)
    assert len(faces) == 1
    scaled = tuple(v * 4 for v in ASTRO_FACE)
    assert _iou(faces[0].box, scaled) > 0.7


@pytest.mark.parametrize("orientation,rotate", [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270)])
def test_exif_rotated_jpeg(astronaut, orientation, rotate):
    # the stored pixels are sideways; the EXIF tag tells viewers how to turn them upright
    stored = Image.fromarray(astronaut).transpose(rotate)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    stored.save(buf, "JPEG", exif=exif, quality=92)
    assert detect_faces(np.asarray(stored)) == []  # sideways face: not found without EXIF handling
    img = load_image(buf.getvalue())
    faces = detect_faces(img)
    assert len(faces) == 1 and _iou(faces[0].box, ASTRO_FACE) > 0.6


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "I;16"])
def test_other_modes_through_load_image(astronaut, mode):
    pil = Image.fromarray(astronaut)
    if mode == "I;16":
        pil = Image.fromarray(np.asarray(pil.convert("L")).astype(np.uint16) * 257)
    else:
        pil = pil.convert(mode)
    buf = io.BytesIO()
    pil.save(buf, "JPEG" if mode == "CMYK" else "PNG")
    faces = detect_faces(load_image(buf.getvalue()))
    assert len(faces) == 1 and _iou(faces[0].box, ASTRO_FACE) > 0.7


def test_recipes_registry_and_meta_dict():
    assert {"none", "prealigned", "ferplus", "ferplus_aligned"} <= set(list_recipes())
    r = get_recipe("ferplus")
    assert get_recipe(r.to_dict()) == r
    assert get_recipe({"recipe": "none"}).detect is False
    custom = get_recipe({"recipe": "mine", "margin": 0.3})
    assert custom.margin == 0.3 and custom.detect
    with pytest.raises(ValueError, match="unknown crop recipe"):
        get_recipe("nope")
    with pytest.raises(ValueError):
        CropRecipe("bad", margin=5)


def test_crop_geometry_and_edge_padding():
    img = np.zeros((100, 120, 3), np.uint8)
    img[:, :60] = 200
    face = Face(box=(40, 30, 40, 40), score=5.0)
    crop = crop_face(img, face, CropRecipe("t", margin=0.25))
    assert crop.shape == (60, 60, 3)  # 40 * (1 + 2 * 0.25)
    np.testing.assert_array_equal(crop[:, :30], 200)  # x 30..59 is the bright half
    np.testing.assert_array_equal(crop[:, 30:], 0)
    # a face at the corner: the crop keeps its size and replicates edges
    corner = crop_face(img, Face(box=(0, 0, 30, 30), score=1.0), CropRecipe("t", margin=0.5))
    assert corner.shape == (60, 60, 3)
    np.testing.assert_array_equal(corner[:15, :15], 200)
    whole = crop_face(img, face, "none")
    assert whole.shape == img.shape
    with pytest.raises(ValueError):
        crop_face(img, Face(box=(500, 500, 10, 10), score=1.0), "ferplus")


def test_extract_faces_matches_crop_face(astronaut):
    out = extract_faces(astronaut, "ferplus")
    assert len(out) == 1
    face, crop = out[0]
    side = round(max(face.box[2:]) * (1 + 2 * get_recipe("ferplus").margin))
    assert crop.shape == (side, side, 3)
    np.testing.assert_array_equal(crop, crop_face(astronaut, face, "ferplus"))
    [(none_face, whole)] = extract_faces(astronaut, "none")
    assert none_face is None and whole.shape == astronaut.shape
    [(none_face, whole)] = extract_faces(astronaut, "ferplus", detect=False)
    assert none_face is None
    with pytest.raises(ValueError, match="load_image"):
        extract_faces(astronaut.astype(np.float32))


def test_roll_alignment_measured_from_eyes(astronaut):
    base = detect_faces(astronaut, landmarks=True)[0]
    assert base.landmarks is not None and abs(base.roll_degrees) < 8
    M = cv2.getRotationMatrix2D((256, 256), -12, 1.0)  # turn the photo 12 degrees clockwise
    rolled = cv2.warpAffine(astronaut, M, (512, 512), borderMode=cv2.BORDER_REPLICATE)
    [(face, crop)] = extract_faces(rolled, "ferplus_aligned")
    assert face.landmarks is not None
    assert abs(face.roll_degrees - (base.roll_degrees + 12)) < 5
    # after alignment the eyes found in the crop are level again
    again = detect_faces(crop, landmarks=True)
    assert again and again[0].landmarks is not None and abs(again[0].roll_degrees) < 6


def test_detection_speed_640x480(astronaut):
    img = np.full((480, 640, 3), 120, np.uint8)
    img[:, 64:576] = cv2.resize(astronaut, (512, 480))
    detect_faces(img)  # load cascades
    times = []
    for _ in range(3):
        t = time.perf_counter()
        faces = detect_faces(img)
        times.append(time.perf_counter() - t)
    assert len(faces) == 1
    # docs/faces.md: ~40-70 ms on the shared 2-core box; loose bound for loaded CI machines
    assert min(times) < 0.25


@pytest.mark.needs_ferplus
def test_ferplus_recipe_reproduces_measured_framing(ferplus_root):
    """Haar boxes on real FER+ crops sit centred at ~0.81 of the frame: the recipe's margin."""
    files = sorted((ferplus_root / "FER2013Test").glob("*.png"))[::60]
    st = framing_stats(load_image(f) for f in files)
    assert st["rate"] > 0.35  # FER+ faces are low-res, often non-frontal: Haar finds ~55%
    assert abs(st["margin"] - get_recipe("ferplus").margin) < 0.04
    assert abs(st["center_dx"]) < 0.03 and abs(st["center_dy"]) < 0.03
    # cropping a detected FER+ face with the recipe gives back (about) the original frame
    for f in files:
        img = load_image(f)
        faces = detect_faces(img)
        if faces:
            break
    crop = crop_face(img, faces[0], "ferplus")
    assert abs(crop.shape[0] - 48) <= 8
