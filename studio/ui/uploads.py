"""Files from browsers: a request may hand the studio only files that Gradio itself received.

A request names a file as ``{"path": ..., "meta": {"_type": "gradio.FileData"}}``, and Gradio copies whatever it
names into its upload folder *before* the handler runs: the handler sees only the copy and cannot tell
``/etc/passwd`` from an upload. Gradio checks the name only once ``launch()`` has run (``Blocks.has_launched``), which
a mounted app never does. So the studio's apps are ``StudioBlocks``, which check every file a request names, before
Gradio copies anything and whatever Gradio's launch state: every handler, of every tab and of the API, is behind
this one rule.
"""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr
from gradio_client.utils import is_file_obj, traverse


HANDLERS_AT_ONCE = 4  # Gradio's default is one: one person's slow handler would hold everybody's page


class FileRefused(gr.Error):
    """A request named a file the studio does not take from browsers."""


def uploaded_file(path: str, folder: Path | None) -> Path:
    """``path`` resolved (symlinks and ``..`` followed) if it lies in ``folder``, the app's upload folder; else
    FileRefused naming it and why. ``folder`` None: the app takes no files at all."""
    shown = html.escape(str(path))
    if folder is None:
        raise FileRefused(f"Refused {shown}: this page takes no files.")
    try:
        found = Path(path).resolve()
    except (OSError, RuntimeError, ValueError):  # a NUL byte, a symlink loop
        found = None
    if found is None or not found.is_relative_to(Path(folder).resolve()):
        raise FileRefused(f"Refused {shown}: the studio only takes files uploaded through its page, and this is a "
                          "path on the server.")
    return found


def check_request_files(inputs, folder: Path | None) -> None:
    """Every file object in a request's ``inputs`` (any dict with a ``path``, at any depth) must be an upload."""
    def check(file_obj: dict) -> dict:
        uploaded_file(file_obj["path"], folder)
        return file_obj

    traverse(inputs, check, is_file_obj)


class StudioBlocks(gr.Blocks):
    """``gr.Blocks`` whose handlers get only files uploaded to this app (``takes_files``), or no files at all, and
    whose queue runs up to ``HANDLERS_AT_ONCE`` calls of each handler at once."""

    def __init__(self, *args, takes_files: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.takes_files = takes_files

    def queue(self, *args, default_concurrency_limit: int | None = HANDLERS_AT_ONCE, **kwargs):
        # Blocks.__init__ makes the queue by calling this; calling queue() again once the app is built would build
        # its whole FastAPI app a second time (~0.1 s of start-up per app), as every queue() call does.
        return super().queue(*args, default_concurrency_limit=default_concurrency_limit, **kwargs)

    async def preprocess_data(self, block_fn, inputs, state, explicit_call: bool = False):
        if not explicit_call:  # a request, not the studio's own code calling the Blocks
            # GRADIO_CACHE: the folder this app's uploads arrive in (and where it keeps copies of files it shows)
            check_request_files(inputs, Path(self.GRADIO_CACHE) if self.takes_files else None)
        return await super().preprocess_data(block_fn, inputs, state, explicit_call)


def keep_files_in(blocks: gr.Blocks, gradio_app, folder: Path) -> None:
    """The mounted app ``gradio_app`` of ``blocks`` keeps and serves its files in ``folder`` instead of Gradio's
    upload folder, which the editors' uploads share: its file route serves nothing from there, and files it shows
    that already lie in ``folder`` are served as they are, not copied."""
    folder.mkdir(parents=True, exist_ok=True)
    for block in (blocks, *blocks.blocks.values()):
        block.GRADIO_CACHE = str(folder)
    gradio_app.uploaded_file_dir = str(folder)
