"""Importing Gradio without its type-stub writer: a third of the studio's start-up went to it.

For every component class it defines, Gradio's ``ComponentMeta`` calls ``create_or_modify_pyi``, which reads the
class's source file, parses it with ``ast`` (twice: the ``.py`` and the ``.pyi`` next to it) and rewrites the ``.pyi``
if the generated event signatures changed. That keeps the type stubs of Gradio's own source tree current for its
developers; for an installed Gradio it changes nothing (the shipped stubs are current, and a read-only install cannot
be written anyway), yet it is ~1.3 s of CPU of a ~3 s ``import gradio`` on a 2-core machine, paid at every start.

``skip_stub_writing`` makes ``gradio.component_meta``'s function a no-op as that module is loaded, before Gradio's
own components are defined (they are defined while ``import gradio`` runs, so patching after the import would be
too late). Only that one module is touched; if a Gradio release renames the function, nothing breaks: the import is
merely slower again (``tests/test_web.py`` checks the stubs are not written).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

MODULE = "gradio.component_meta"


def _no_stubs(*_args, **_kwargs) -> None:
    """Stands in for ``gradio.component_meta.create_or_modify_pyi``."""


class _SkipStubWriting(importlib.abc.MetaPathFinder):
    """Finds ``gradio.component_meta`` as the normal path finder does, and swaps its stub writer out once it ran."""

    def find_spec(self, name, path, target=None):
        if name != MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec  # an unusual install (a zip, a frozen app): import it untouched
        run_module = spec.loader.exec_module

        def exec_module(module) -> None:
            run_module(module)
            if hasattr(module, "create_or_modify_pyi"):
                module.create_or_modify_pyi = _no_stubs

        spec.loader.exec_module = exec_module
        return spec


def skip_stub_writing() -> None:
    """Install the finder (once) unless Gradio is already imported, in which case there is nothing left to save."""
    if MODULE not in sys.modules and not any(isinstance(finder, _SkipStubWriting) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SkipStubWriting())
