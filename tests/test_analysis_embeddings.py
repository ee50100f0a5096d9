import numpy as np
import pytest
import torch

from fer_lab.analysis.embeddings import (compute_embedding, data_key, embedding_figure, embedding_widget,
                                         extract_features, weights_hash)
from fer_lab.labels import canonical
from fer_lab.models import create_model


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("baseline").eval()
    rng = np.random.default_rng(0)

    def stripes(n, axis):  # two visually distinct groups -> two clusters in feature space
        base = np.zeros((32, 32), np.uint8)
        if axis == 0:
            base[::4] = base[1::4] = 200
        else:
            base[:, ::4] = base[:, 1::4] = 200
        return (base[None, :, :, None] + rng.integers(0, 55, (n, 32, 32, 3))).astype(np.uint8)

    sources = {"horizontal": stripes(40, 0), "vertical": stripes(40, 1)}
    cache = tmp_path_factory.mktemp("emb")
    emb = compute_embedding(model, sources, random_state=0, input_size=32, cache_dir=cache, n_neighbors=10)
    return model, sources, cache, emb


def test_embedding_shapes_clusters_and_features(setup):
    model, sources, _, emb = setup
    assert emb.coords.shape == (80, 2) and np.isfinite(emb.coords).all()
    assert emb.features.shape == (80, 1024) and emb.probs.shape == (80, 7)
    assert list(emb.datasets[:40]) == ["horizontal"] * 40 and emb.labels is None and not emb.from_cache
    # the two sources are separable in the 2-D layout: a point's 5 nearest neighbours come from its own source
    # (UMAP keeps neighbourhoods; where a cluster lands, and so a centroid rule, moves with the CPU's kernels:
    # 0.99 here, 0.90 under ATEN_CPU_CAPABILITY=default, while the neighbours stay pure on both; random coordinates: ~0.5)
    d = np.linalg.norm(emb.coords[:, None] - emb.coords[None], axis=2)
    np.fill_diagonal(d, np.inf)
    source = np.repeat([0, 1], 40)
    assert (source[np.argsort(d, axis=1)[:, :5]] == source[:, None]).mean() > 0.95
    # pre-logit features are what forward_head(pre_logits=True) gives
    f = extract_features(model, sources["horizontal"][:3], input_size=32)
    from fer_lab.analysis.cam import preprocess_for
    with torch.no_grad():
        ref = model.forward_head(model.forward_features(preprocess_for(model, 32)(list(sources["horizontal"][:3]))), pre_logits=True)
    np.testing.assert_allclose(f, ref.numpy(), atol=1e-5)


def test_embedding_cache_and_seed_determinism(setup):
    model, sources, cache, emb = setup
    again = compute_embedding(model, sources, random_state=0, input_size=32, cache_dir=cache, n_neighbors=10)
    assert again.from_cache and again.key == emb.key
    np.testing.assert_array_equal(again.coords, emb.coords)
    refit = compute_embedding(model, sources, random_state=0, input_size=32, use_cache=False, n_neighbors=10)
    np.testing.assert_allclose(refit.coords, emb.coords, atol=1e-4)  # same seed -> same layout
    # the key follows weights, data and parameters
    other = create_model("baseline")
    assert weights_hash(other) != weights_hash(model) and weights_hash(model) == weights_hash(model)
    assert data_key(sources) != data_key({"horizontal": sources["horizontal"]})
    assert len(list(cache.glob("embeddings/*.npz"))) == 1


def test_embedding_figures(setup):
    _, sources, _, emb = setup
    imgs = list(sources["horizontal"]) + list(sources["vertical"])
    fig = embedding_figure(emb, "dataset", images=imgs)
    assert sorted(t.name for t in fig.data) == ["horizontal", "vertical"]
    assert fig.layout.xaxis.title.text == "UMAP 1"
    assert str(fig.data[0].customdata[0][1]).startswith("data:image/png;base64,")
    ent = embedding_figure(emb, "entropy")
    assert len(ent.data) == 1 and ent.data[0].marker.showscale
    pred = embedding_figure(emb, "prediction")
    assert {t.name for t in pred.data} <= set(canonical(7).to_list())
    with pytest.raises(ValueError, match="no annotated labels"):
        embedding_figure(emb, "label")
    with pytest.raises(ValueError, match="images for"):
        embedding_figure(emb, "dataset", images=imgs[:3])
    w = embedding_widget(fig)
    assert len(w.children) == 2


def test_label_map_mismatch_is_refused(tmp_path):
    from fer_lab.analysis.distributions import FaceSet

    model8 = create_model("baseline", num_classes=8)
    faces = FaceSet(np.zeros((6, 32, 32, 3), np.uint8), np.zeros(6, np.int64), label_map=canonical(7))
    with pytest.raises(ValueError, match="label map"):
        compute_embedding(model8, faces, use_cache=False, input_size=32)


def test_pca_layout_separates_cached_and_clicks_show_distribution(tmp_path):
    """method="pca": the no-JIT layout (smoke mode) keeps clusters apart, is cached under its own
    key, labels its axes; the widget's click handler shows that point's own distribution."""
    from plotly.callbacks import InputDeviceState, Points

    torch.manual_seed(0)
    model = create_model("baseline").eval()
    rng = np.random.default_rng(1)
    a = rng.integers(0, 40, (20, 32, 32, 3)).astype(np.uint8)
    b = (215 + rng.integers(0, 40, (20, 32, 32, 3))).astype(np.uint8)
    emb = compute_embedding(model, {"dark": a, "bright": b}, method="pca", input_size=32, cache_dir=tmp_path)
    assert emb.coords.shape == (40, 2) and emb.params["method"] == "pca" and not emb.from_cache
    ca, cb = emb.coords[:20].mean(0), emb.coords[20:].mean(0)
    near_a = np.linalg.norm(emb.coords - ca, axis=1) < np.linalg.norm(emb.coords - cb, axis=1)
    assert near_a[:20].all() and not near_a[20:].any()
    again = compute_embedding(model, {"dark": a, "bright": b}, method="pca", input_size=32, cache_dir=tmp_path)
    assert again.from_cache and again.key == emb.key
    np.testing.assert_array_equal(again.coords, emb.coords)
    with pytest.raises(ValueError, match="method"):
        compute_embedding(model, a, method="tsne", use_cache=False, input_size=32)
    fig = embedding_figure(emb, "dataset", images=list(a) + list(b))
    assert fig.layout.xaxis.title.text == "PCA 1"
    w = embedding_widget(fig, emb)
    fw, dist = w.children[0], w.children[1].children[1]
    tr = fw.data[1]  # "bright" (traces sorted by name length, then name)
    k = 3
    tr._dispatch_on_click(Points(point_inds=[k], xs=[0], ys=[0], trace_name=tr.name, trace_index=1),
                          InputDeviceState())
    idx = int(tr.customdata[k][0])
    np.testing.assert_allclose(dist.data[0].y, emb.probs[idx], atol=1e-6)
    assert dist.layout.title.text == f"point #{idx}" and w.children[1].children[0].value
