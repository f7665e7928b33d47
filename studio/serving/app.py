"""A deployment's HTTP application: what its serving process answers.

``create_app`` is called once by the serving process (``studio.serving.process``), before it listens: whatever the
deployment needs ready (its models loaded) is ready when ``/health`` first answers, so the studio can mark it
running then."""

from __future__ import annotations

from fastapi import FastAPI

from studio.store import Store
from studio.store.tables import Deployment


def create_app(store: Store, deployment_id: int) -> FastAPI:
    """The application for deployment ``deployment_id``: ``GET /health`` and ``GET /v1/models`` (the served names)."""
    with store.session() as session:
        deployment = session.get(Deployment, deployment_id)
        if deployment is None:
            raise LookupError(f"there is no deployment #{deployment_id}")
        served = [m["name"] for m in deployment.models]
        created = int(deployment.created_at.timestamp())
    app = FastAPI(title=f"Gen Studio deployment #{deployment_id}", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "deployment_id": deployment_id}

    @app.get("/v1/models")
    def models() -> dict:  # the OpenAI shape: existing clients list these names
        return {"object": "list",
                "data": [{"id": name, "object": "model", "created": created, "owned_by": "gen-studio"}
                         for name in served]}

    return app
