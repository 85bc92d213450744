"""Catalog behaviour on SQLite and PostgreSQL (``catalog`` fixture from tests.catalog_fixtures)."""

from __future__ import annotations

import hashlib
from datetime import UTC

import pytest

from hub.core.errors import BadInputError, ConflictError, NotFoundError
from hub.core.models import AdapterMeta, BaseModelInfo, EvaluationRecord
from storage.catalog import NewVersion


def dg(seed: object) -> str:
    return hashlib.sha256(str(seed).encode()).hexdigest()


def nv(seed: object, **kw) -> NewVersion:
    base = dict(
        digest=dg(seed),
        size_bytes=1000,
        config={"r": 8, "lora_alpha": 16},
        base_model_id="tiny-llama",
        base_model_revision="abc123",
        architecture="llama",
        target_modules=["q_proj", "v_proj"],
        module_ranks={"layers.0.q_proj": 8, "layers.0.v_proj": 4},
        module_shapes={"layers.0.q_proj": (64, 64), "layers.0.v_proj": (64, 32)},
        dtype="F32",
    )
    base.update(kw)
    return NewVersion(**base)


def meta(name: str, **kw) -> AdapterMeta:
    return AdapterMeta(name=name, **kw)


def test_register_and_read_back(catalog):
    item, created = catalog.register_version(
        meta("sql", description="text to SQL", tags=["sql", "code"], license="mit"), nv(1)
    )
    assert created and item.version == 1
    assert item.rank == 8 and item.base_model == "tiny-llama"
    assert item.tags == ["code", "sql"] and item.license == "mit"
    assert item.created_at.tzinfo is not None
    assert catalog.get_item("sql") == item
    detail = catalog.get_detail("sql", 1)
    assert [(m.name, m.rank, m.in_features, m.out_features) for m in detail.modules] == [
        ("layers.0.q_proj", 8, 64, 64),
        ("layers.0.v_proj", 4, 64, 32),
    ]
    assert detail.config == {"r": 8, "lora_alpha": 16}
    assert detail.lineage.parents == [] and detail.lineage.recipe is None
    assert detail.created_at.astimezone(UTC) == item.created_at


def test_versions_increment_and_metadata_updates_only_when_given(catalog):
    catalog.register_version(meta("a", description="first", tags=["x"]), nv(1))
    item, created = catalog.register_version(meta("a"), nv(2))
    assert created and item.version == 2
    assert item.description == "first" and item.tags == ["x"]
    item3, _ = catalog.register_version(meta("a", description="new"), nv(3))
    assert item3.version == 3 and item3.description == "new"


def test_same_digest_is_idempotent_and_writes_nothing(catalog):
    first, _ = catalog.register_version(meta("a", description="one"), nv(1))
    again, created = catalog.register_version(meta("a", description="changed"), nv(1))
    assert not created and again == first
    assert catalog.get_item("a").description == "one"
    # the same content under another name is a separate adapter version
    other, created = catalog.register_version(meta("b"), nv(1))
    assert created and other.version == 1
    assert [(i.name, i.version) for i in catalog.versions_by_digest(dg(1))] == [("a", 1), ("b", 1)]


def test_not_found_messages(catalog):
    with pytest.raises(NotFoundError, match="adapter 'nope' not found"):
        catalog.get_item("nope")
    catalog.register_version(meta("a"), nv(1))
    catalog.register_version(meta("a"), nv(2))
    with pytest.raises(NotFoundError, match="adapter 'a' has no version 3; latest is 2"):
        catalog.get_detail("a", 3)
    assert catalog.version_id("a", 1) != catalog.version_id("a")


def test_lineage_and_recipe_survive_parent_deletion(catalog):
    p1, _ = catalog.register_version(meta("p1"), nv(1))
    p2, _ = catalog.register_version(meta("p2"), nv(2))
    ids = [catalog.version_id("p1"), catalog.version_id("p2")]
    recipe = {"method": "ties", "params": {"density": 0.5}, "seed": 0}
    catalog.register_version(
        meta("merged"),
        nv(3, source="merge", recipe=recipe),
        parents=[(ids[0], "merge", 0.7), (ids[1], "merge", 0.3)],
    )
    lineage = catalog.get_detail("merged").lineage
    assert [(p.name, p.version, p.relation, p.weight) for p in lineage.parents] == [
        ("p1", 1, "merge", 0.7),
        ("p2", 1, "merge", 0.3),
    ]
    assert lineage.recipe == recipe
    catalog.delete("p1")
    after = catalog.get_detail("merged").lineage
    assert [(p.name, p.version, p.deleted) for p in after.parents] == [
        ("p1", 1, True),
        ("p2", 1, False),
    ]
    catalog.register_version(meta("p1"), nv(4))  # the name again: another adapter's p1@1
    again = catalog.get_detail("merged").lineage
    assert [(p.name, p.version, p.deleted) for p in again.parents][0] == ("p1", 1, True)


def test_unknown_parent_is_refused_and_nothing_written(catalog):
    with pytest.raises(NotFoundError, match="lineage parent"):
        catalog.register_version(meta("child"), nv(1), parents=[(999_999, "merge", None)])
    with pytest.raises(NotFoundError):
        catalog.get_item("child")


def test_list_items_filters_and_latest(catalog):
    catalog.register_version(meta("sql-a", tags=["sql"]), nv(1))
    catalog.register_version(meta("sql-a"), nv(2, base_model_id="other-base"))
    catalog.register_version(meta("sql_b", tags=["sql", "x"]), nv(3, source="merge"))
    catalog.register_version(meta("SQLc", tags=["x"]), nv(4))

    items, total = catalog.list_items()
    assert total == 3 and [(i.name, i.version) for i in items] == [
        ("SQLc", 1),
        ("sql-a", 2),
        ("sql_b", 1),
    ]
    items, total = catalog.list_items(all_versions=True)
    assert total == 4
    # version-level filter: latest version *on that base model*
    items, _ = catalog.list_items(base_model="tiny-llama")
    assert [(i.name, i.version) for i in items] == [("SQLc", 1), ("sql-a", 1), ("sql_b", 1)]
    assert [i.name for i in catalog.list_items(tag="sql")[0]] == ["sql-a", "sql_b"]
    assert [i.name for i in catalog.list_items(tag="s")[0]] == []
    assert [i.name for i in catalog.list_items(source="merge")[0]] == ["sql_b"]
    # prefix is case-sensitive and '_' is literal
    assert [i.name for i in catalog.list_items(name_prefix="sql")[0]] == ["sql-a", "sql_b"]
    assert [i.name for i in catalog.list_items(name_prefix="sql_")[0]] == ["sql_b"]
    page, total = catalog.list_items(limit=1, offset=1)
    assert total == 3 and [i.name for i in page] == ["sql-a"]


def test_latest_facet_rows_match_the_listed_items(catalog):
    """Browse pages count facets over these column-only rows: same adapters, same order, same
    values as ``list_items`` (latest version only; rank = largest module rank)."""
    catalog.register_version(meta("sql-a", tags=["sql"], license="mit"), nv(1))
    catalog.register_version(meta("sql-a", tags=["new"]), nv(2, module_ranks={"m": 16}))
    catalog.register_version(meta("sql_b", tags=["sql", "x"]), nv(3, source="merge"))
    catalog.register_version(meta("SQLc"), nv(4, base_model_id="other", module_ranks={}))
    items, _ = catalog.list_items()
    rows = catalog.latest_facet_rows()
    fields = ("base_model", "tags", "rank", "source", "license")
    assert [tuple(getattr(r, f) for f in fields) for r in rows] == [
        (i.base_model, tuple(i.tags), i.rank, i.source, i.license) for i in items
    ]
    by_id = catalog.items_by_ids(r.version_id for r in rows)
    assert [(by_id[r.version_id].name, by_id[r.version_id].version) for r in rows] == [
        (i.name, i.version) for i in items
    ]
    assert [(r.rank, r.tags) for r in rows] == [(0, ()), (16, ("new",)), (8, ("sql", "x"))]


def test_delete_version_and_adapter(catalog):
    catalog.register_version(meta("a"), nv(1))
    catalog.register_version(meta("a"), nv(2))
    catalog.register_version(meta("b"), nv(2))
    assert catalog.delete("a", 2) == []  # b@1 still uses that content
    assert catalog.get_item("a").version == 1
    # numbers are never reused while the adapter exists
    assert catalog.register_version(meta("a"), nv(5))[0].version == 3
    assert catalog.delete("a") == sorted([dg(1), dg(5)])
    with pytest.raises(NotFoundError):
        catalog.get_item("a")
    assert catalog.referenced_digests() == {dg(2)}
    with pytest.raises(NotFoundError):
        catalog.delete("a")
    with pytest.raises(NotFoundError, match="no version 9"):
        catalog.delete("b", 9)


def test_evaluations(catalog):
    catalog.register_version(meta("a"), nv(1))
    vid = catalog.version_id("a")
    catalog.add_evaluation(vid, EvaluationRecord(task="capital_of", accuracy=0.8, n=30))
    catalog.add_evaluation(vid, EvaluationRecord(task="sum", accuracy=0.5, n=10, details={"k": 1}))
    evals = catalog.get_detail("a").evaluations
    assert [(e.task, e.accuracy, e.n, e.details) for e in evals] == [
        ("capital_of", 0.8, 30, {}),
        ("sum", 0.5, 10, {"k": 1}),
    ]
    assert all(e.created_at is not None for e in evals)
    with pytest.raises(NotFoundError):
        catalog.add_evaluation(123456, EvaluationRecord(task="t", accuracy=0, n=1))


def test_base_models_upsert(catalog):
    assert catalog.get_base_model("tiny") is None
    info = BaseModelInfo(model_id="tiny", architecture="llama", module_shapes={"q": (64, 64)})
    assert catalog.register_base_model(info) == info
    info2 = info.model_copy(update={"revision": "r2", "module_shapes": {"q": (64, 32)}})
    catalog.register_base_model(info2)
    assert catalog.get_base_model("tiny") == info2
    assert catalog.list_base_models() == [info2]


def test_jobs_lifecycle(catalog):
    job = catalog.create_job("merge", {"method": "ties"})
    assert job.state == "queued" and job.spec == {"method": "ties"} and job.started_at is None
    running = catalog.update_job(job.id, state="running", progress=0.25, message="layer 3/12")
    assert running.started_at is not None and running.progress == 0.25
    catalog.register_version(meta("out"), nv(1))
    done = catalog.update_job(
        job.id, state="succeeded", progress=1.0, result_version_id=catalog.version_id("out")
    )
    assert done.result == "out@1" and done.finished_at is not None
    assert catalog.get_job(job.id) == done
    other = catalog.create_job("sync", {})
    assert [j.id for j in catalog.list_jobs(state="queued")] == [other.id]
    assert {j.id for j in catalog.list_jobs()} == {job.id, other.id}
    with pytest.raises(BadInputError):
        catalog.update_job(job.id, state="exploded")
    with pytest.raises(BadInputError):
        catalog.update_job(job.id, colour="red")
    with pytest.raises(NotFoundError):
        catalog.get_job("no-such-job")


def test_job_compare_and_set_applies_only_from_the_named_states(catalog):
    job = catalog.create_job("merge", {})
    taken = catalog.update_job(job.id, only_from={"queued"}, state="running", message="mine")
    assert taken.state == "running" and taken.started_at is not None
    with pytest.raises(ConflictError) as exc:  # a second taker loses and writes nothing
        catalog.update_job(job.id, only_from={"queued"}, state="running", message="theirs")
    assert exc.value.code == "job_state_changed" and exc.value.details == {"state": "running"}
    assert "is running, not queued" in exc.value.message
    assert catalog.get_job(job.id).message == "mine"


def test_a_job_can_be_born_running_but_in_no_other_state(catalog):
    job = catalog.create_job("merge", {"x": 1}, state="running")
    assert job.state == "running" and job.started_at is not None
    assert [j.id for j in catalog.list_jobs(state="queued")] == []
    with pytest.raises(BadInputError, match="queued or running, not 'succeeded'"):
        catalog.create_job("merge", {}, state="succeeded")
    assert [j.id for j in catalog.list_jobs()] == [job.id]


def test_items_by_ids_and_text_hash(catalog):
    catalog.register_version(meta("a"), nv(1))
    catalog.register_version(meta("b"), nv(2))
    ids = catalog.list_version_ids()
    assert len(ids) == 2
    got = catalog.items_by_ids(ids + [424242])
    assert sorted(i.name for i in got.values()) == ["a", "b"]
    catalog.set_text_hash(ids[0], "f" * 64)


def test_integrity_check(catalog):
    catalog.register_version(meta("a"), nv(1))
    assert catalog.integrity_check() == "ok"


def test_sqlite_pragmas(sqlite_url):
    from sqlalchemy import text

    from storage.catalog import open_catalog

    cat = open_catalog(sqlite_url)
    try:
        with cat.engine.connect() as conn:
            pragma = lambda p: conn.execute(text(f"PRAGMA {p}")).scalar()  # noqa: E731
            assert pragma("journal_mode") == "wal"
            assert pragma("foreign_keys") == 1
            assert pragma("synchronous") == 2  # FULL
            assert pragma("busy_timeout") == 30000
    finally:
        cat.close()


def test_sqlite_writers_begin_immediate(sqlite_url):
    # Deferred write transactions get SQLITE_BUSY without waiting when they upgrade to a
    # writer; writers must take the lock at BEGIN.
    from sqlalchemy import event

    from storage.catalog import open_catalog

    cat = open_catalog(sqlite_url)
    seen: list[str] = []
    event.listen(cat.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    try:
        cat.register_version(meta("a"), nv(1))
        assert "BEGIN IMMEDIATE" in seen
        seen.clear()
        cat.get_item("a")
        assert "BEGIN" in seen and "BEGIN IMMEDIATE" not in seen
    finally:
        cat.close()
