"""What several tabs share: the project and dataset-version choices (the UI's small state manager)."""

from __future__ import annotations

from studio.data.service import DEFAULT_PROJECT, list_datasets
from studio.store import Store


def project_choices(store: Store) -> list[str]:
    names = {d["project"] for d in list_datasets(store)} | {DEFAULT_PROJECT}
    return sorted(names)


def version_choices(store: Store, project: str | None) -> list[tuple[str, str]]:
    """(label, ``DATASET_ID:VERSION``) for every version in ``project``, newest first."""
    choices = []
    for dataset in reversed(list_datasets(store)):
        if project and dataset["project"] != project:
            continue
        for version in reversed(dataset["versions"]):
            label = (f"{dataset['name']} v{version['version']} · {dataset['modality']} · "
                     f"{version['items_kept']} items")
            choices.append((label, f"{dataset['dataset_id']}:{version['version']}"))
    return choices
