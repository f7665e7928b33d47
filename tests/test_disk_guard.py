"""The disk guard refuses a new upload or run up front, with a message saying what to do, and stores nothing."""

from __future__ import annotations

import pytest

from studio.data.items import ImportRefused
from studio.data.service import import_dataset, list_datasets
from studio.settings import load_settings
from studio.store import open_store
from studio.training import jobs
from studio.training.config import TrainConfig
from studio.training.runs import list_runs


def test_low_disk_refuses_imports_and_runs_and_keeps_what_is_stored(tmp_path):
    corpus = tmp_path / "tales.txt"
    corpus.write_text("\n\n".join(f"Tale number {i} of the fox and the hen." for i in range(20)))
    roomy = open_store(load_settings(home=tmp_path / "home"))
    dataset = str(import_dataset(roomy, [corpus], name="tales")["dataset_id"])
    roomy.close()

    full = open_store(load_settings(home=tmp_path / "home", min_free_disk_mb=10**12))  # more than any disk has
    with pytest.raises(ImportRefused, match=r"not enough free disk space to import a dataset: .* MB free under .*"
                                             r"STUDIO_MIN_FREE_DISK_MB"):
        import_dataset(full, [corpus], name="again")
    with pytest.raises(jobs.RunError, match="not enough free disk space to start a training run"):
        jobs.create_run(full, dataset, "starter-text", "scratch", TrainConfig(max_steps=1))
    assert [d["name"] for d in list_datasets(full)] == ["tales"]  # the earlier import is intact, nothing added
    assert list_runs(full) == []
    full.close()
