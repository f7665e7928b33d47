"""What each kind of background task does: the service function it runs (the one the CLI calls too), the errors
that are refusals (their message is all a person needs: a bad file, a wrong setting), and what the page calls it.

A task's ``params`` are that function's keyword arguments as JSON; the worker turns them back into arguments here.
Each kind imports its service when it runs, so a worker loads what its own task needs and no more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from studio.data.items import ImportRefused
from studio.store import Store

if TYPE_CHECKING:
    from studio.data.clean import Progress


@dataclass(frozen=True)
class Kind:
    label: str  # what the page says while it runs: "Importing"
    run: Callable[[Store, dict, Progress, str | None], dict]  # (store, params, progress, actor) → JSON-ready result
    refusals: tuple[type[Exception], ...]
    # With a Ray cluster (STUDIO_RAY_ADDRESS): what the task's Ray job asks for (a model to load: the heavy ones);
    # None: it runs on this machine whatever (it reads the files staged by this web process).
    on_cluster: dict[str, float] | None = None


def _import(store: Store, params: dict, progress: Progress, actor: str | None) -> dict:
    from studio.data.service import import_dataset

    params = dict(params)
    paths, mapping = [store.path(p) for p in params.pop("paths")], _mapping(params.pop("mapping", None))
    return import_dataset(store, paths, **params, mapping=mapping, created_by=actor, progress=progress)


def _hub_import(store: Store, params: dict, progress: Progress, actor: str | None) -> dict:
    from studio.data.read_datasets import parse_hub_ref
    from studio.data.service import import_dataset

    params = dict(params)
    mapping = _mapping(params.pop("mapping", None))
    # only ever a Hub id: a page may not name a folder of the server's
    source = parse_hub_ref(params.pop("ref"))
    return import_dataset(store, [source.label], **params, mapping=mapping, created_by=actor, progress=progress)


def _reclean(store: Store, params: dict, progress: Progress, actor: str | None) -> dict:
    from studio.data.service import reclean

    params = dict(params)
    version_id, mapping = params.pop("version_id"), _mapping(params.pop("mapping", None))
    return reclean(store, version_id, **params, mapping=mapping, created_by=actor, progress=progress)


def _mapping(found: dict | None):
    from studio.data.mapping import ColumnMapping

    return ColumnMapping(**found) if found else None


def _export(store: Store, params: dict, progress: Progress, actor: str | None) -> dict:
    from studio.sharing.export import export_checkpoint

    return export_checkpoint(store, **params, actor=actor, progress=progress)


def _metrics(store: Store, params: dict, progress: Progress, actor: str | None) -> dict:
    from studio.evaluation.metrics import MetricsParams, run_metrics

    params = dict(params)
    ref = params.pop("ref")  # the rest, if any: MetricsParams fields
    found = run_metrics(store, ref, MetricsParams(**params), progress=progress)
    # the page reads the metrics from their file (runs/<id>/eval); the row keeps what was measured, and when
    return {key: found.get(key) for key in ("ref", "run_id", "step", "cached", "computed_at", "seconds")}


def _bakeoff(store: Store, params: dict, progress: Progress, actor: str | None) -> dict:
    from studio.evaluation.bakeoff import sample_and_score

    return sample_and_score(store, int(params["bakeoff_id"]), progress=progress, actor=actor)


DATA_REFUSALS = (ImportRefused, ValueError)  # StepsConfigError, a bad split or mapping, ProjectError: ValueErrors

KINDS = {
    "import": Kind("Importing", _import, DATA_REFUSALS),
    "hub_import": Kind("Importing from the Hub", _hub_import, DATA_REFUSALS),
    "reclean": Kind("Cleaning again", _reclean, DATA_REFUSALS),
    # ExportError and VariantError are ValueErrors; OSError: the disk; NotImplementedError: a format a family lacks
    "export": Kind("Exporting", _export, (ValueError, OSError, NotImplementedError),
                   on_cluster={"CPU": 1}),  # merging and converting weights: the CPU and memory
    # MetricsError is a ValueError; the models it scores with run on a GPU where the node has one
    "metrics": Kind("Computing metrics", _metrics, (ValueError, FileNotFoundError), on_cluster={"CPU": 1, "GPU": 1}),
    # BakeoffError, GenerationError, VariantError and MetricsError are ValueErrors. Here, not on a cluster: it moves
    # the bake-off's row on as it goes (sampling, scoring)
    "bakeoff": Kind("Sampling and scoring a bake-off", _bakeoff, (ValueError, FileNotFoundError)),
}
