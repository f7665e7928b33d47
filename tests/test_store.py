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
        assert connection.execute(text("select version_num from alembic_version")).scalar() == "0004"


def test_sqlite_runs_in_wal_mode(store):
    with store.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"


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


@pytest.mark.skipif(not os.environ.get("STUDIO_TEST_POSTGRES_URL"), reason="no PostgreSQL server "
                    "(scripts/test.sh starts one and sets STUDIO_TEST_POSTGRES_URL when it can)")
def test_postgresql_store_imports_and_survives_reopen(tmp_path):
    url = os.environ["STUDIO_TEST_POSTGRES_URL"]
    settings = load_settings(home=tmp_path / "home", database_url=url)
    store = open_store(settings)
    with store.engine.begin() as connection:  # start from an empty schema: the test owns this database
        for table in ("rating_votes", "rating_assignments", "generated_samples", "sample_sets", "prompt_sets",
                      "device_locks", "run_samples", "control_flags", "checkpoints", "metrics", "runs",
                      "dataset_versions", "datasets", "uploads", "projects", "alembic_version"):
            connection.execute(text(f"DROP TABLE IF EXISTS {table} CASCADE"))
    store.close()
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
