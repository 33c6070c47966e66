"""Exact search below the crossover, Annoy / hnsw indexes above it, PCA-reduced snapshots,
and the manifest's index kind (bench/matching_scale.py measures what these rely on)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facerec.config import IndexConfig, MatchConfig
from facerec.errors import SnapshotMismatch
from facerec.records import index_message
from facerec.snapshot_format import load_snapshot, verify_snapshot
from index_builder.snapshot import index_options, write_snapshot
from testkit import shared_data
from udfs.match import Matcher, negative_person_id

MODEL = "model-a"


def face_like(n: int, seed: int, rank: int = 48, dim: int = 512) -> tuple[np.ndarray, list[str]]:
    """Unit vectors of persons with 3 templates each, spread in a ``rank``-dimensional
    subspace (real FaceNet embeddings keep 99.99% of their variance in 96 of 512)."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, rank)))[0].T.astype(np.float32)
    centres = rng.standard_normal((n // 3 + 1, rank)).astype(np.float32)
    persons = np.arange(n) // 3
    z = centres[persons] + 0.35 * rng.standard_normal((n, rank)).astype(np.float32)
    v = z @ basis + 1e-3 * rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True), [f"p{p}" for p in persons]


def probes(gallery: np.ndarray, seed: int, n: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = gallery[rng.choice(len(gallery), n, replace=False)]
    q = base + 0.02 * rng.standard_normal(base.shape).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def build(tmp_path, vectors, persons, name, **options):
    return write_snapshot(
        tmp_path,
        [f"t{i}" for i in range(len(vectors))],
        list(persons),
        vectors,
        model_id=MODEL,
        max_change_seq=10,
        n_trees=10,
        snapshot_id=name,
        **options,
    )


def msg(kind: str, **body) -> dict:
    return json.loads(index_message(kind, **body))


@pytest.mark.parametrize(
    "options",
    [{"index_kind": "annoy"}, {"index_kind": "hnsw"}, {"index_kind": "hnsw", "pca_dim": 64}],
    ids=["annoy", "hnsw", "hnsw-pca64"],
)
def test_given_gallery_straddling_crossover_when_matched_then_exact_and_index_agree(
    tmp_path, options
):
    vecs, persons = face_like(600, seed=1)
    persons[7] = negative_person_id("p1")  # a rejected face beside p1's templates
    info = build(tmp_path, vecs, persons, "s", **options)
    exact = Matcher(MODEL, threshold=0.9, exact_max_templates=600)
    index = Matcher(MODEL, threshold=0.9, exact_max_templates=599, search_k=20_000, hnsw_ef=200)
    extra = face_like(3, seed=9)[0]
    for m in (exact, index):
        m.load_snapshot(info.path)
        m.apply(msg("delete", seq=11, person_id="p5"))
        m.apply(
            msg(
                "enroll",
                seq=12,
                person_id="new",
                template_id="tn",
                model_id=MODEL,
                vector=extra[0].tolist(),
            )
        )
    assert exact.search_path == "exact" and index.search_path == options["index_kind"]
    queries = np.vstack([probes(vecs, 2), vecs[15:18], vecs[7:8], extra[:1], face_like(5, 3)[0]])
    thresholds = [0.9] * (len(queries) - 1) + [1.9]
    got_exact, got_index = exact.match(queries, thresholds), index.match(queries, thresholds)
    assert got_exact == got_index
    assert all(r.person_id != "p5" for r in got_exact)  # erased: neither path returns it
    assert got_exact[-6].identity == "new" and got_exact[-7].identity == "unknown"  # veto


def test_given_exact_path_when_compared_with_brute_force_then_same_nearest(tmp_path):
    vecs, persons = face_like(300, seed=4)
    m = Matcher(MODEL, threshold=1.5)
    m.load_snapshot(build(tmp_path, vecs, persons, "s").path)
    assert m.search_path == "exact"  # 300 <= the measured default crossover
    queries = np.vstack([probes(vecs, 5), face_like(20, seed=6)[0]])
    nearest = np.linalg.norm(vecs[None, :, :] - queries[:, None, :], axis=2).argmin(axis=1)
    assert [r.template_id for r in m.match(queries)] == [f"t{i}" for i in nearest]


def test_given_config_defaults_then_matcher_and_builder_follow_them():
    assert Matcher(MODEL).exact_max_templates == MatchConfig().exact_max_templates
    assert Matcher.from_config(MatchConfig(exact_max_templates=7, hnsw_ef=33)).hnsw_ef == 33
    assert Matcher.from_config(MatchConfig(hnsw_threads=2)).hnsw_threads == 2
    cfg = IndexConfig(kind="hnsw", pca_dim=96, hnsw_m=12)
    opts = index_options(cfg)
    assert opts["index_kind"] == "hnsw" and opts["pca_dim"] == 96 and opts["hnsw_m"] == 12


def test_given_hnsw_threads_when_a_batch_is_matched_then_the_same_matches(tmp_path):
    """match.hnsw_threads spreads a micro-batch over hnswlib's threads: the same answers."""
    vecs, persons = face_like(2000, seed=9)
    path = build(tmp_path, vecs, persons, "h", index_kind="hnsw", pca_dim=32).path
    queries = np.vstack([probes(vecs, 40), face_like(24, seed=10)[0]])
    answers = []
    for threads in (1, 2):
        m = Matcher.from_config(
            MatchConfig(exact_max_templates=0, hnsw_threads=threads, threshold=1.5), MODEL
        )
        m.load_snapshot(path)
        assert m.search_path == "hnsw"
        answers.append([(r.template_id, round(r.distance, 5)) for r in m.match(queries)])
        m.close()
    assert answers[0] == answers[1] and len(answers[0]) == 64


def test_given_index_kinds_when_written_then_manifest_records_and_reader_follows(tmp_path):
    vecs, persons = face_like(200, seed=7)
    hnsw = build(tmp_path, vecs, persons, "h", index_kind="hnsw", pca_dim=32)
    m = hnsw.manifest
    assert m["index_kind"] == "hnsw" and m["projection"]["kind"] == "pca"
    assert m["projection"]["dim"] == 32 and m["hnsw_m"] == 16
    assert set(m["files"]) == {"index.hnsw", "ids.json", "vectors.npy", "projection.npy"}
    snap = load_snapshot(hnsw.path, model_id=MODEL, dim=512)
    assert snap.index_kind == "hnsw" and snap.searcher is not None
    assert snap.searcher.kind == "hnsw" and snap.index.dim == 32
    assert list(snap.searcher.search(vecs[3:4], 1)[0]) == [3]
    annoy = build(tmp_path, vecs, persons, "a")
    assert annoy.manifest["index_kind"] == "annoy" and "projection" not in annoy.manifest
    # a snapshot written before the field: Annoy
    path = annoy.path / "manifest.json"
    old = json.loads(path.read_text())
    del old["index_kind"]
    path.write_text(json.dumps(old))
    assert load_snapshot(annoy.path).index_kind == "annoy"
    # too few templates to fit the components: no projection, a full-dimension index
    small = build(tmp_path, vecs[:20], persons[:20], "small", index_kind="hnsw", pca_dim=32)
    assert "projection" not in small.manifest and load_snapshot(small.path).index.dim == 512
    # the same templates and seed, one build thread: the same bytes
    again = build(tmp_path, vecs, persons, "h2", index_kind="hnsw", pca_dim=32)
    assert again.manifest["files"] == hnsw.manifest["files"]


def test_given_unknown_index_kind_or_projection_when_loaded_then_refused(tmp_path):
    vecs, persons = face_like(60, seed=8)
    good = build(tmp_path, vecs, persons, "good")
    m = Matcher(MODEL)
    m.load_snapshot(good.path)
    for name, field, value, match in [
        ("faiss", "index_kind", "faiss", "index kind 'faiss' unknown"),
        ("proj", "projection", {"kind": "umap", "dim": 8}, "projection .* unknown"),
    ]:
        info = build(tmp_path, vecs, persons, name)
        path = info.path / "manifest.json"
        manifest = json.loads(path.read_text()) | {field: value}
        path.write_text(json.dumps(manifest))
        with pytest.raises(SnapshotMismatch, match=match):
            verify_snapshot(info.path)
        with pytest.raises(SnapshotMismatch, match=match):
            m.apply(msg("snapshot", seq=20, manifest=manifest, path=str(info.path)))
    assert m.snapshot_id == "good"  # the old snapshot keeps serving
    with pytest.raises(ValueError, match="index_kind"):
        build(tmp_path, vecs, persons, "bad", index_kind="faiss")


def test_given_pca_reduced_snapshot_when_matched_then_same_answers_as_full(tmp_path):
    """PCA fitted on the gallery: on face-like vectors (rank 48 here; 96 holds 99.99% of
    real FaceNet embeddings) the reduced index finds what the full one finds."""
    vecs, persons = face_like(3000, seed=10)
    queries = np.vstack([probes(vecs, 11, 100), face_like(30, seed=12)[0]])
    answers = []
    for name, options in [
        ("full", {}),
        ("annoy96", {"pca_dim": 96}),
        ("hnsw96", {"index_kind": "hnsw", "pca_dim": 96}),
        ("hnsw48", {"index_kind": "hnsw", "pca_dim": 48}),
    ]:
        m = Matcher(MODEL, exact_max_templates=0, search_k=20_000, hnsw_ef=128)
        m.load_snapshot(build(tmp_path, vecs, persons, name, **options).path)
        answers.append(m.match(queries))
    assert answers[1:] == [answers[0]] * 3


def lfw_sample(engine, tmp_path) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """Real FaceNet embeddings of LFW: (gallery names, gallery vectors, probe names, probe
    vectors). The gallery holds the first image of 250 people with more than one and of 300
    with one, the probes are the 250's second images: embedded here from the LFW images
    when the faces folder has them (800 images), else read from the cache `facerec eval
    --lfw` leaves, which holds them all."""
    from bench.matching_scale import DEFAULT_CACHE, find_lfw_cache
    from udfs.evaluation import list_identities
    from udfs.open_set import embed_cached

    root = shared_data.faces_dir() / "lfw"
    cached = None
    if (root / "pairs.txt").is_file():
        found = list_identities(root).items()
        people = {name: [str(p.relative_to(root)) for p in files] for name, files in found}
    else:
        try:
            file = find_lfw_cache(DEFAULT_CACHE)
        except FileNotFoundError as exc:
            pytest.skip(f"LFW not found in {root}; {exc}")
        with np.load(file, allow_pickle=False) as z:
            meta, vectors = json.loads(str(z["meta"])), z["vectors"]
        cached = {p: vectors[i] for i, p in enumerate(meta["paths"])}
        people = {}
        for p in sorted(cached):
            people.setdefault(p.split("/")[0], []).append(p)
    repeated = [files for _, files in sorted(people.items()) if len(files) > 1][:250]
    single = [files for _, files in sorted(people.items()) if len(files) == 1][:300]
    gallery = [files[0] for files in repeated + single]
    probes_ = [files[1] for files in repeated]
    if cached is None:
        vectors, meta = embed_cached(engine, root, [root / p for p in gallery + probes_], tmp_path)
        assert not meta["unreadable"]
        cached = dict(zip(gallery + probes_, vectors, strict=True))
    return (
        [p.split("/")[0] for p in gallery],
        np.stack([cached[p] for p in gallery]),
        [p.split("/")[0] for p in probes_],
        np.stack([cached[p] for p in probes_]),
    )


@pytest.mark.data
def test_given_real_lfw_embeddings_when_reduced_to_96_then_same_answers(tmp_path, engine):
    """A gallery of 550 LFW people (``lfw_sample``) probed with other photos of 250 of them,
    through hnsw on 96 PCA components against exact search on all 512."""
    gallery_names, gallery, probe_names, probe_vectors = lfw_sample(engine, tmp_path / "cache")
    info = write_snapshot(
        tmp_path,
        [f"t{i}" for i in range(len(gallery))],
        gallery_names,
        gallery,
        model_id=MODEL,
        max_change_seq=1,
        index_kind="hnsw",
        pca_dim=96,
        snapshot_id="lfw",
    )
    assert info.manifest["projection"]["variance_kept"] > 0.999
    exact = Matcher(MODEL, exact_max_templates=len(gallery))
    index = Matcher(MODEL, exact_max_templates=0, hnsw_ef=64)
    for m in (exact, index):
        m.load_snapshot(info.path)
    got_exact, got_index = exact.match(probe_vectors), index.match(probe_vectors)
    same = np.mean([a == b for a, b in zip(got_exact, got_index, strict=True)])
    print(f"\nLFW, hnsw on 96 components vs exact: {same:.2%} of {len(got_exact)} probes agree")
    assert same >= 0.99, same
    # real, different photos of the same people: the nearest template is theirs for most
    nearest = zip(got_exact, probe_names, strict=True)
    right = np.mean([m.person_id == name for m, name in nearest])
    print(f"rank-1 of the exact search: {right:.2%}")
    assert right >= 0.9, right
