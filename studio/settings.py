"""Every setting of the studio, in one place.

Each field can be set by an environment variable named ``STUDIO_<FIELD>`` (for example
``STUDIO_HOME``, ``STUDIO_DATABASE_URL``, ``STUDIO_MAX_UPLOAD_MB``) or by the CLI flag of the same
name (``studio serve --port 8000``). The README's settings table is generated from this model.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    # On Hugging Face Spaces with persistent storage, /data is the only folder that survives a
    # restart, so the studio keeps everything there; elsewhere, a folder in the working directory.
    data = Path("/data")
    if os.environ.get("SPACE_ID") and data.is_dir() and os.access(data, os.W_OK):
        return data / "studio"
    return Path.cwd() / "studio_home"


def _default_host() -> str:
    # A Space must listen on all interfaces; a personal machine only on loopback.
    return "0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STUDIO_", extra="ignore")

    home: Path = Field(default_factory=_default_home,
                       description="Folder where datasets, uploads, runs and the SQLite database live: "
                                   "./studio_home, or /data/studio on a Space with persistent storage.")
    database_url: str | None = Field(
        default=None, json_schema_extra={"secret": True},  # holds the database's password
        description="SQLAlchemy URL. Default: SQLite file studio.db under STUDIO_HOME. "
                    "PostgreSQL: postgresql+psycopg2://user:pass@host/db")
    host: str = Field(default_factory=_default_host, description="Interface the web studio listens on: 127.0.0.1, or 0.0.0.0 on a Space.")
    port: int = Field(default=7860, ge=0, le=65535,
                      description="Port of the web studio; 0: a free port the system picks, printed at start-up.")
    allowed_hosts: str = Field(
        default="",
        description="Host names the web studio answers to besides localhost, 127.0.0.1, the bind address and a "
                    "Space's own host: comma-separated, *.example.com for its subdomains, * for any. A request "
                    "naming another host gets 400, so a web page cannot reach the studio under a DNS name of its "
                    "own (DNS rebinding); requests from other sites' pages get 403.")
    max_upload_mb: int = Field(default=1024, ge=1, description="Largest single uploaded file (MB).")
    upload_keep_hours: float = Field(
        default=24, gt=0,
        description="Files uploaded through the page, and the copies of files the page shows, are deleted from "
                    "Gradio's upload folder this many hours after they arrive, and when the studio stops (imported "
                    "data is kept under STUDIO_HOME).")
    max_archive_total_mb: int = Field(default=4096, ge=1,
                                      description="Largest total uncompressed size of one archive (MB).")
    max_archive_ratio: int = Field(default=100, ge=2,
                                   description="Largest compression ratio of an archive member over 64 KiB, and of "
                                               "a whole archive (zip-bomb guard).")
    max_archive_members: int = Field(default=100_000, ge=1, description="Most files in one archive.")
    max_image_pixels: int = Field(default=64_000_000, ge=1,
                                  description="Largest image (pixels) before it counts as a decompression bomb.")
    max_line_chars: int = Field(default=1_000_000, ge=1_000,
                                description="Longest line of a text file and longest value of a table cell "
                                            "(characters): a longer line or row is skipped, named in the import's "
                                            "warnings, and never held whole in memory.")
    max_table_columns: int = Field(default=1_000, ge=1,
                                   description="Most columns of a table (csv, tsv, jsonl, json, parquet): a wider "
                                               "table is refused, a wider row skipped.")
    max_json_mb: int = Field(default=64, ge=1,
                             description="Largest .json file (MB): JSON has to be parsed whole (a few times its "
                                         "size in memory); bigger data goes in .jsonl, read a line at a time.")
    max_audio_seconds: float = Field(default=600.0, gt=0,
                                     description="Longest audio clip (seconds), checked from the file's header "
                                                 "before decoding and again while decoding a block at a time.")
    min_free_disk_mb: int = Field(default=1024, ge=0,
                                  description="Disk guard: a new upload or run is refused, with a clear message, "
                                              "when less than this is free under STUDIO_HOME (0 turns it off).")
    generation_cache_mb: int = Field(default=4096, ge=1,
                                     description="Memory bound of the Generate model cache (MB of weights): beyond "
                                                 "it the least recently used model is unloaded.")
    blocklist: str = Field(default="",
                           description="Output filter for text prompts and outputs: comma-separated words or "
                                       "phrases, or the path of a file with one per line. Empty: off.")
    serve_batch_window_ms: float = Field(default=10.0, ge=0, le=1000,
                                         description="Deployments: how long concurrent text requests are collected "
                                                     "into one batch (ms; 0: each runs as it comes).")
    serve_max_batch: int = Field(default=32, ge=1, le=1024,
                                 description="Deployments: most sequences generated in one text batch.")
    serve_cache_entries: int = Field(default=1024, ge=0,
                                     description="Deployments: responses to seeded requests kept to answer the same "
                                                 "request again without the model (0: no cache).")
    serve_max_request_bytes: int = Field(default=1_048_576, ge=1024,
                                         description="Deployments: largest request body (bytes); bigger ones get 413.")
    serve_rate_per_minute: int = Field(default=600, ge=1,
                                       description="Deployments: requests per minute per API key, for keys without a "
                                                   "rate of their own (local requests without a key are not limited).")
    served_keep_days: float = Field(
        default=30, ge=0,
        description="Deployments: each request a deployment served, its outputs and the feedback on it are deleted "
                    "this many days after it was served (make a dataset of the feedback before then). 0: kept "
                    "forever.")
    eval_min_decision_seconds: float = Field(
        default=1.5, ge=0,
        description="Human rating: a vote decided faster than this (seconds after the item was shown) is flagged: "
                    "kept, but left out of the leaderboard unless flagged votes are included.")
    eval_preliminary_votes: int = Field(
        default=20, ge=1,
        description="Human rating: a variant with fewer counted votes than this is marked preliminary on the "
                    "leaderboard.")
    eval_repeat_share: float = Field(
        default=0.1, ge=0, le=0.5,
        description="Human rating: the share of items shown again to the same rater (sides swapped) to measure "
                    "each rater's self-consistency.")
    clip_model_path: str = Field(
        default="",
        description="Automatic metrics: a local CLIP model folder (transformers, safetensors) for the CLIP score and "
                    "FID of image checkpoints. Empty: those two are skipped.")
    audio_embedding_model_path: str = Field(
        default="",
        description="Automatic metrics: a local CLAP model folder (transformers, safetensors) for the CLAP score and "
                    "FAD of audio checkpoints. Empty: those two are skipped.")
    export_max_shard_mb: float = Field(
        default=5000, gt=0,
        description="Export: weights files written by `studio export` (merged models) are split into shards of at "
                    "most this many MB (model-0000x-of-0000y.safetensors plus an index), as save_pretrained does.")
    hub_endpoint: str = Field(
        default="",
        description="Hub pushes: the Hugging Face Hub address (e.g. a private Hub mirror). Empty: HF_ENDPOINT, else "
                    "https://huggingface.co. The token comes from --token or HF_TOKEN.")
    users: str = Field(
        default="",
        description="Sign-in: the path of a users file (NAME:ROLE:HASH lines, written by `studio users add`), or "
                    "such entries separated by commas. Roles: editor (everything), rater (the rating page only). "
                    "Empty: sign-in is off and everyone is an editor (a personal machine).")
    oauth_editors: str = Field(
        default="",
        description="Sign-in with Hugging Face (a Space with hf_oauth: true): comma-separated Hugging Face user "
                    "names that are editors, * for everyone; every other signed-in account is a rater. Empty: the "
                    "Space's owner.")
    metrics_token: str = Field(
        default="", json_schema_extra={"secret": True},
        description="With sign-in on: a token that lets a monitoring system read /metrics without an account "
                    "(sent as 'Authorization: Bearer TOKEN'). Empty: /metrics needs an editor's sign-in.")
    session_secret: str = Field(
        default="", json_schema_extra={"secret": True},
        description="Key that signs sign-in cookies. Empty: a random key kept in STUDIO_HOME/session_secret, so "
                    "sign-ins survive a restart.")
    trusted_proxies: str = Field(
        default="",
        description="Comma-separated addresses or networks (10.0.0.0/8) of reverse proxies whose X-Forwarded-For and "
                    "X-Forwarded-Proto headers are believed: the client's address for the sign-in throttle, https for "
                    "Secure cookies. * believes every peer (only when nothing but the proxy reaches the studio). "
                    "Empty: none; behind a proxy, every sign-in then counts against the proxy's address.")
    public_url: str = Field(
        default="",
        description="The address people open the studio at (https://studio.example.com): sign-in cookies are Secure "
                    "when it is https, and the sign-in form also accepts posts from it (a proxy that changes the Host "
                    "header). Empty: each request's own address.")

    gpus: str = Field(
        default="",
        description="Comma-separated GPU ids the studio places training runs on (0,1,2,3): each run holds "
                    "num_processes of them, pinned with CUDA_VISIBLE_DEVICES, and several runs share the machine. "
                    "Ids no CUDA device answers to are allowed (runs then train on the CPU but still hold their "
                    "slot). Empty: every GPU nvidia-smi lists; none: one CPU slot (one run at a time).")
    backfill_seconds: float = Field(
        default=300.0, ge=0,
        description="How long a queued run that asks for more GPUs than are free lets smaller, later runs start "
                    "ahead of it on the free ones; after that they wait behind it, so a large run is not starved.")
    heartbeat_timeout_seconds: float = Field(
        default=180.0, gt=0,
        description="A run whose worker wrote no heartbeat to the store for this long is marked failed (with its "
                    "log's end), wherever it ran; it can be resumed from its last checkpoint.")
    ray_address: str = Field(
        default="",
        description="The Ray cluster's Jobs API address (its dashboard, http://head:8265): training "
                    "runs, automatic metrics and exports are submitted to it as Ray jobs with their GPU/CPU/memory "
                    "request instead of started here (a run with num_nodes above 1 as a Ray Train job). Needs a "
                    "PostgreSQL store (STUDIO_DATABASE_URL) and STUDIO_HOME on storage every node mounts. Empty: "
                    "everything starts on this machine.")
    ray_token: str = Field(
        default="", json_schema_extra={"secret": True},
        description="The Ray cluster's authentication token (a cluster started with RAY_AUTH_MODE=token): sent to its "
                    "Jobs API as 'Authorization: Bearer TOKEN'. Empty: Ray's own (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH "
                    "or ~/.ray/auth_token), which Ray's client sends only when RAY_AUTH_MODE=token is set where the "
                    "studio runs.")
    ray_memory_gb: float = Field(
        default=0.0, ge=0,
        description="Memory each training process (and each metrics or export job) asks Ray for (GB), so Ray places "
                    "it only on a node with that much free (a run asks num_processes x num_nodes times it). 0: no "
                    "memory request.")

    @field_validator("home")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("public_url")
    @classmethod
    def _web_address(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"STUDIO_PUBLIC_URL must start with http:// or https://, not '{value}'")
        return value

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'studio.db'}"

    @property
    def on_spaces(self) -> bool:
        return bool(os.environ.get("SPACE_ID"))

    @property
    def host_names(self) -> list[str]:
        """Every host name the web studio answers to (see ``allowed_hosts``). Loopback names always: they cannot
        serve a DNS-rebinding page, and health checks use them. SPACE_HOST: the Space's own host (a comma-separated
        list when the Space has a custom domain)."""
        listed = f"{self.allowed_hosts},{os.environ.get('SPACE_HOST', '')}"
        names = ["localhost", "127.0.0.1", "::1", self.host] + [name.strip() for name in listed.split(",")]
        return list(dict.fromkeys(name.lower() for name in names if name.strip()))

    def as_env(self) -> dict[str, str]:
        """These settings as ``STUDIO_*`` variables, for a worker process to read the same ones (a flag given to
        `studio serve` is in no environment otherwise)."""
        return {f"STUDIO_{name.upper()}": str(value) for name, value in self if value is not None}


def load_settings(**overrides) -> Settings:
    """Settings from the environment, with explicit (CLI) values taking precedence."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def secret_variables() -> set[str]:
    """The environment variables of settings that hold a secret (a password, a token, a key): the studio never
    prints their values, and names the variable instead."""
    return {f"STUDIO_{name.upper()}" for name, field in Settings.model_fields.items()
            if (field.json_schema_extra or {}).get("secret")}


def settings_table() -> str:
    """A Markdown table of every setting, for the README and `studio settings`."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = "see meaning" if field.default_factory else repr(field.default)
        rows.append(f"| `STUDIO_{name.upper()}` | {default} | {field.description} |")
    return "\n".join(rows)
