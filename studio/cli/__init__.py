"""The `studio` command: serve the web studio, and script the same services the UI uses.

Each module declares its commands with ``app.Commands`` (words, help, arguments, handler); ``main`` builds one
parser from them and runs the handler of the command given. Handlers import their services when they run, so
``studio --help`` and ``studio runs list`` load no model library.
"""

from __future__ import annotations

import argparse

from studio.cli import app, bakeoff, data, deploy, evaluation, export, generation, projects, serve, training, \
    users

# in the order --help lists them
MODULES = (serve, users, data, training, generation, projects, export, evaluation, bakeoff, deploy)


def build_parser() -> argparse.ArgumentParser:
    return app.build(module.commands for module in MODULES)


def main(argv: list[str] | None = None) -> int:
    return app.run(build_parser(), argv)
