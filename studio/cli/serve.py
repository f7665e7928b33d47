"""``studio serve`` and ``studio settings``: the web studio, and what configures it."""

from __future__ import annotations

from studio.cli.app import Commands
from studio.cli.shared import settings_of
from studio.settings import settings_table

commands = Commands()


@commands.command("serve", help="start the web studio (same as python studio_app.py)", json=False)
def cmd_serve(args) -> int:
    from studio.ui.server import serve

    serve(settings_of(args))
    return 0


@commands.command("settings", help="list every setting and its environment variable", json=False, settings=False)
def cmd_settings(_args) -> int:
    print(settings_table())
    return 0
