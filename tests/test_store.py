"""The store: schema migrations match the tables, data survives a restart, PostgreSQL works too."""

from __future__ import annotations

import os

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from studio.data.service import import_dataset, list_datasets, read_manifest, get_version
from studio.settings import load_settings
from studio.store import open_store
from studio.store.tables import Base


def _schema_drift(engine) -> list:
    with engine.connect() as connection:
        return compare_metadata(MigrationContext.configure(connection), Base.metadata)


def test_migrations_create_exactly_the_tables_the_code_declares(store):
    assert _schema_drift(store.engine) == []
    with store.engine.connect() as connection:
        assert connection.execute(text("select version_num from alembic_version")).scalar() == "0013"


def test_sqlite_runs_in_wal_mode(store):
    with store.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def _modes(home) -> dict[str, int]:
    return {name: (home / name).stat().st_mode & 0o777 for name in ("studio.db", "studio.db-wal", "studio.db-shm")}


def test_the_database_and_its_wal_files_are_readable_by_their_owner_only(home, tmp_path):
    import sqlite3

    umask = os.umask(0o022)  # the usual umask: files are created readable by everyone unless asked otherwise
    try:
        store = open_store(load_settings(home=home))
        import_dataset(store, [_corpus(tmp_path)], name="notes")  # a write: the -wal and -shm files are there
        assert _modes(home) == dict.fromkeys(_modes(home), 0o600)
        store.close()

        (home / "studio.db").chmod(0o644)  # as an older studio left it
        older = sqlite3.connect(home / "studio.db")  # holds the -wal and -shm files open, created 0644 too
        older.execute("PRAGMA journal_mode=WAL")
        older.execute("CREATE TABLE IF NOT EXISTS scratch (x)")
        older.commit()
        assert set(_modes(home).values()) == {0o644}
        reopened = open_store(load_settings(home=home))
        assert _modes(home) == dict.fromkeys(_modes(home), 0o600)
        assert [d["name"] for d in list_datasets(reopened)] == ["notes"]
        reopened.close()
        older.close()
    finally:
        os.umask(umask)


def _corpus(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("\n\n".join(f"Paragraph {i} talks about topic {i} with several distinct words {i * 7}."
                                for i in range(12)))
    return path


def test_dataset_survives_a_restart(home, tmp_path):
    settings = load_settings(home=home)
    first = open_store(settings)
    result = import_dataset(first, [_corpus(tmp_path)], name="notes")
    first.close()

    reopened = open_store(load_settings(home=home))  # a new process would do exactly this
    datasets = list_datasets(reopened)
    assert [d["name"] for d in datasets] == ["notes"]
    version = get_version(reopened, f"{result['dataset_id']}:1")
    assert len(read_manifest(reopened, version)) == result["items_kept"] == 12
    assert sorted(r["text"] for r in read_manifest(reopened, version)) == sorted(
        _corpus(tmp_path).read_text().split("\n\n"))  # the items themselves, not just as many
    assert _schema_drift(reopened.engine) == []


def test_a_second_import_under_the_same_name_is_a_new_version_and_keeps_the_first(store, tmp_path):
    first = import_dataset(store, [_corpus(tmp_path)], name="notes")
    before = (store.path(f"datasets/{first['dataset_id']}/v1") / "manifest.jsonl").read_bytes()
    second = import_dataset(store, [_corpus(tmp_path)], name="notes", split="0.5,0.5,0")
    assert (second["dataset_id"], second["version"]) == (first["dataset_id"], 2)
    assert (store.path(f"datasets/{first['dataset_id']}/v1") / "manifest.jsonl").read_bytes() == before
    assert second["splits"]["test"] == 0


def test_version_folders_are_never_overwritten(store, tmp_path):
    result = import_dataset(store, [_corpus(tmp_path)], name="notes")
    # Someone (or a crashed run) left a folder where version 2 would go: the import must not write into it.
    squatter = store.path(f"datasets/{result['dataset_id']}/v2")
    (squatter / "keep").mkdir(parents=True)
    with pytest.raises(OSError):
        import_dataset(store, [_corpus(tmp_path)], name="notes")
    assert (squatter / "keep").is_dir()
    assert [v["version"] for v in list_datasets(store)[0]["versions"]] == [1]


def test_postgresql_store_imports_and_survives_reopen(tmp_path, postgres_url):
    settings = load_settings(home=tmp_path / "home", database_url=postgres_url)
    store = open_store(settings)
    assert {"datasets", "dataset_versions"} <= set(inspect(store.engine).get_table_names())
    assert _schema_drift(store.engine) == []
    result = import_dataset(store, [_corpus(tmp_path)], name="pg-notes")
    store.close()
    reopened = open_store(settings)
    assert [d["name"] for d in list_datasets(reopened)] == ["pg-notes"]
    assert get_version(reopened, str(result["dataset_id"])).items_kept == 12
    reopened.close()


def test_upgrading_an_older_database_keeps_its_rows(home):
    from studio.store.engine import make_engine, upgrade_schema

    home.mkdir(parents=True)
    settings = load_settings(home=home)
    engine = make_engine(settings.db_url)
    upgrade_schema(engine, "0001")  # a database made by the first release
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO projects (id, name, created_at) VALUES (1, 'old', '2026-01-01')"))
        connection.execute(text("INSERT INTO datasets (id, project_id, name, modality, created_at) "
                                "VALUES (7, 1, 'kept', 'text', '2026-01-01')"))
    engine.dispose()
    store = open_store(settings)  # today's studio starting on it
    assert [d["name"] for d in list_datasets(store)] == ["kept"]
    assert "runs" in inspect(store.engine).get_table_names()
    assert _schema_drift(store.engine) == []


def _insert(connection, table: str, **values) -> None:
    columns = ", ".join(f'"{c}"' for c in values)  # quoted: sample_sets has a column named "references"
    connection.execute(text(f"INSERT INTO {table} ({columns}) VALUES ({', '.join(':' + c for c in values)})"),
                        values)


def _fill_a_0004_database(connection) -> None:
    """Two projects, a run in the second, and two sample sets: one of that run's, one of the base alone."""
    at = "2026-01-01 00:00:00"
    _insert(connection, "projects", id=1, name="default", created_at=at)
    _insert(connection, "projects", id=2, name="team", created_at=at)
    _insert(connection, "datasets", id=1, project_id=2, name="d", modality="text", created_at=at)
    _insert(connection, "dataset_versions", id=1, dataset_id=1, version=1, source="{}", steps="[]", report="{}",
            splits="{}", path="datasets/1/v1", items_in=1, items_kept=1, created_at=at)
    _insert(connection, "runs", id=5, project_id=2, dataset_version_id=1, model_ref="m", method="lora",
            modality="text", config="{}", status="completed", created_at=at, output_dir="runs/5", steps_done=1,
            total_steps=1)
    sample_set = dict(created_at=at, modality="text", base_model="m", prompts='["hi"]', references="[]",
                      settings="{}", seeds="[[1]]", samples_per_prompt=1, status="completed", report="{}")
    _insert(connection, "sample_sets", id=1, variants='[{"ref": "base"}, {"ref": "5:1", "run_id": 5}]', **sample_set)
    _insert(connection, "sample_sets", id=2, variants='[{"ref": "base"}]', **sample_set)
    _insert(connection, "generated_samples", id=1, set_id=1, variant="base", prompt_index=0, prompt="hi",
            sample_index=0, seed=1, text="hello", seconds=0.1, created_at=at)


def _store_upgraded_from_0004(home, fill, database_url: str | None = None, revision: str = "0004"):
    """A database made by the 0004 release (or ``revision``'s), filled by ``fill(connection)``, opened by today's
    studio."""
    from studio.store.engine import make_engine, upgrade_schema

    home.mkdir(parents=True)
    settings = load_settings(home=home, database_url=database_url)
    engine = make_engine(settings.db_url)
    upgrade_schema(engine, revision)
    with engine.begin() as connection:
        fill(connection)
    engine.dispose()
    return open_store(settings)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_upgrading_from_0004_gives_each_sample_set_a_project_and_keeps_every_row(home, database, request):
    from studio.store.tables import GeneratedSample, SampleSet

    url = request.getfixturevalue("postgres_url") if database == "postgresql" else None
    store = _store_upgraded_from_0004(home, _fill_a_0004_database, url)
    with store.session() as session:
        projects = {s.id: s.project_id for s in session.query(SampleSet)}
        kept = session.query(GeneratedSample).one().text
    assert projects == {1: 2, 2: 1}  # the run's project; the base-only set goes to the default project
    assert kept == "hello"
    assert _schema_drift(store.engine) == []
    store.close()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_upgrading_from_0009_moves_a_running_runs_device_lock_to_its_claim(home, database, request):
    """The one machine-wide lock becomes the run's claim of the CPU slot (no second run starts beside it), and every
    run joins the queue's order at its creation."""
    from studio.store.tables import DeviceClaim, Run

    def fill(connection):
        _fill_a_0004_database(connection)
        connection.execute(text("UPDATE runs SET status = 'running'"))
        _insert(connection, "device_locks", device_set="local", run_id=5, locked_at="2026-01-02 00:00:00")

    url = request.getfixturevalue("postgres_url") if database == "postgresql" else None
    store = _store_upgraded_from_0004(home, fill, url, revision="0009")
    with store.session() as session:
        assert [(c.device, c.holder, c.holder_id) for c in session.query(DeviceClaim)] == [("cpu", "run", 5)]
        run = session.get(Run, 5)
        assert run.queued_at == run.created_at and run.devices is None
    assert _schema_drift(store.engine) == []
    store.close()


def test_upgrading_from_0004_creates_the_default_project_when_a_set_needs_one(home):
    from studio.store.tables import Project, SampleSet

    store = _store_upgraded_from_0004(home, lambda connection: _insert(
        connection, "sample_sets", id=3, created_at="2026-01-01", modality="text", base_model="m", variants="[]",
        prompts="[]", references="[]", settings="{}", seeds="[]", samples_per_prompt=1, status="completed",
        report="{}"))
    with store.session() as session:
        default = session.query(Project).filter_by(name="default").one()
        assert session.get(SampleSet, 3).project_id == default.id
    store.close()


def test_actions_are_recorded_with_their_actor_and_read_back_newest_first(store):
    from studio.store import list_actions, record_action

    record_action(store, "ana", "dataset.import", "dataset:1", project="default", details={"version": 1})
    with store.session() as session:  # inside a service's own transaction
        record_action(session, None, "run.create", "run:2", project="team")
    everything = list_actions(store)
    assert [(a["actor"], a["action"], a["target"]) for a in everything] == [
        (None, "run.create", "run:2"), ("ana", "dataset.import", "dataset:1")]
    assert everything[1]["details"] == {"version": 1} and everything[1]["at"]
    assert [a["target"] for a in list_actions(store, project="default")] == ["dataset:1"]
    assert len(list_actions(store, limit=1)) == 1
