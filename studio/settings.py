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
        default=None,
        description="SQLAlchemy URL. Default: SQLite file studio.db under STUDIO_HOME. "
                    "PostgreSQL: postgresql+psycopg2://user:pass@host/db")
    host: str = Field(default_factory=_default_host, description="Interface the web studio listens on: 127.0.0.1, or 0.0.0.0 on a Space.")
    port: int = Field(default=7860, ge=1, le=65535, description="Port of the web studio.")
    max_upload_mb: int = Field(default=1024, ge=1, description="Largest single uploaded file (MB).")
    max_archive_total_mb: int = Field(default=4096, ge=1,
                                      description="Largest total uncompressed size of one archive (MB).")
    max_archive_ratio: int = Field(default=100, ge=2,
                                   description="Largest compression ratio of an archive member (zip-bomb guard).")
    max_archive_members: int = Field(default=100_000, ge=1, description="Most files in one archive.")
    max_image_pixels: int = Field(default=64_000_000, ge=1,
                                  description="Largest image (pixels) before it counts as a decompression bomb.")
    min_free_disk_mb: int = Field(default=1024, ge=0,
                                  description="Disk guard: a new upload or run is refused, with a clear message, "
                                              "when less than this is free under STUDIO_HOME (0 turns it off).")
    generation_cache_mb: int = Field(default=4096, ge=1,
                                     description="Memory bound of the Generate model cache (MB of weights): beyond "
                                                 "it the least recently used model is unloaded.")
    blocklist: str = Field(default="",
                           description="Output filter for text prompts and outputs: comma-separated words or "
                                       "phrases, or the path of a file with one per line. Empty: off.")
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
        default="",
        description="With sign-in on: a token that lets a monitoring system read /metrics without an account "
                    "(sent as 'Authorization: Bearer TOKEN'). Empty: /metrics needs an editor's sign-in.")
    session_secret: str = Field(
        default="",
        description="Key that signs sign-in cookies. Empty: a random key kept in STUDIO_HOME/session_secret, so "
                    "sign-ins survive a restart.")

    @field_validator("home")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'studio.db'}"

    @property
    def on_spaces(self) -> bool:
        return bool(os.environ.get("SPACE_ID"))

    def as_env(self) -> dict[str, str]:
        """These settings as ``STUDIO_*`` variables, for a worker process to read the same ones (a flag given to
        `studio serve` is in no environment otherwise)."""
        return {f"STUDIO_{name.upper()}": str(value) for name, value in self if value is not None}


def load_settings(**overrides) -> Settings:
    """Settings from the environment, with explicit (CLI) values taking precedence."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def settings_table() -> str:
    """A Markdown table of every setting, for the README and `studio settings`."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = "see meaning" if field.default_factory else repr(field.default)
        rows.append(f"| `STUDIO_{name.upper()}` | {default} | {field.description} |")
    return "\n".join(rows)
