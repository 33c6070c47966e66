"""Enrollment store on SQLite (tmp file) and PostgreSQL (the session's throwaway cluster, a
unique schema per test, dropped after)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from index_builder.store import DuplicatePerson, EnrollmentStore, NewTemplate, PersonNotFound

MODEL = "model-a"


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.integration),
    ]
)
def store(request, tmp_path):
    if request.param == "sqlite":
        s = EnrollmentStore(f"sqlite:///{tmp_path / 'enrollment.sqlite'}")
    else:
        postgres = request.getfixturevalue("postgres")
        s = EnrollmentStore(postgres.url, schema=f"t_store_{uuid.uuid4().hex[:12]}")
    s.create_schema()
    s.create_schema()  # idempotent
    yield s
    s.drop_schema()
    s.close()


def unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(512).astype(np.float32)
    return v / np.linalg.norm(v)


def test_given_people_when_crud_then_round_trips(store):
    p = store.create_person("Ada Lovelace", external_ref="emp-1", metadata={"team": "a"})
    assert store.ping()
    got = store.get_person(p.id)
    assert got.display_name == "Ada Lovelace" and got.metadata == {"team": "a"}
    assert got.created_at.tzinfo is not None
    with pytest.raises(DuplicatePerson):
        store.create_person("Other", external_ref="emp-1")
    q = store.create_person("Grace", person_id="grace")
    assert q.id == "grace"
    page, total = store.list_people(limit=1, offset=0)
    assert total == 2 and [x.id for x in page] == [p.id]
    page2, _ = store.list_people(limit=1, offset=1)
    assert [x.id for x in page2] == ["grace"]
    upd = store.update_person("grace", display_name="Grace Hopper", metadata={"navy": True})
    assert upd.display_name == "Grace Hopper" and upd.metadata == {"navy": True}
    with pytest.raises(DuplicatePerson):
        store.update_person("grace", external_ref="emp-1")
    with pytest.raises(PersonNotFound):
        store.get_person("nobody")
    with pytest.raises(PersonNotFound):
        store.update_person("nobody", display_name="x")


def test_given_templates_when_enrolled_then_change_log_is_monotonic(store):
    rng = np.random.default_rng(0)
    a = store.create_person("A")
    b = store.create_person("B")
    ta = store.add_templates(
        a.id, [NewTemplate(unit(rng), MODEL, {"ok": True}, f"{i:02x}" * 32) for i in range(3)]
    )
    tb = store.add_template(b.id, unit(rng), MODEL, {"ok": True}, "bb" * 32)
    store.add_template(b.id, unit(rng), "model-b")
    seqs = [t.seq for t in ta] + [tb.seq]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    assert store.max_seq() == seqs[-1] + 1
    assert store.count_templates(MODEL) == 4
    assert store.get_person(a.id).template_count == 3
    rows = list(store.iter_vectors(MODEL))
    assert [r[0] for r in rows] == [t.id for t in ta] + [tb.id]
    np.testing.assert_array_equal(rows[0][2], ta[0].embedding)
    assert len(list(store.iter_vectors(MODEL, max_seq=ta[1].seq))) == 2
    listed = store.list_templates(a.id, with_embeddings=True)
    assert [t.id for t in listed] == [t.id for t in ta] and listed[0].embedding.shape == (512,)
    with pytest.raises(PersonNotFound):
        store.add_template("nobody", unit(rng), MODEL)
    with pytest.raises(ValueError, match="512"):
        store.add_template(a.id, np.ones(3, np.float32), MODEL)


def test_given_person_when_deleted_then_templates_erased_and_tombstone_logged(store):
    rng = np.random.default_rng(1)
    a = store.create_person("A")
    store.add_templates(a.id, [NewTemplate(unit(rng), MODEL) for _ in range(2)])
    before = store.max_seq()
    change = store.delete_person(a.id)
    assert change.kind == "delete" and change.seq == before + 1
    assert store.count_templates() == 0 and store.list_templates(a.id) == []
    with pytest.raises(PersonNotFound):
        store.get_person(a.id)
    with pytest.raises(PersonNotFound):
        store.delete_person(a.id)
    log = store.changes_since(0)
    assert [c.kind for c in log] == ["enroll", "enroll", "delete"]
    assert [c.seq for c in log] == sorted(c.seq for c in log)
    # seq never goes back, even after the highest row's person is gone
    b = store.create_person("B")
    assert store.add_template(b.id, unit(rng), MODEL).seq > change.seq


def test_given_a_photo_enrolled_when_enrolled_again_then_duplicate_unless_the_model_changed(
    store,
):
    """The same photo twice for one person is one template; after the crop or the model
    changed (another model id) it is enrolled again, as a template of the new model."""
    from index_builder.store import DuplicateTemplate

    person = store.create_person("Ada")
    vec = np.ones(512, np.float32) / np.sqrt(512)
    (first,) = store.add_templates(person.id, [NewTemplate(vec, "model-a", {}, "sha-1")])
    with pytest.raises(DuplicateTemplate) as refused:
        store.add_templates(person.id, [NewTemplate(vec, "model-a", {}, "sha-1")])
    assert refused.value.existing.id == first.id
    (again,) = store.add_templates(person.id, [NewTemplate(vec, "model-b", {}, "sha-1")])
    assert again.model_id == "model-b"
    assert store.find_template(person.id, "sha-1", "model-b").id == again.id
    assert store.find_template(person.id, "sha-1", "model-a").id == first.id
