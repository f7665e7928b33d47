"""What every command's handler uses: the settings and store its flags name, its output (text, or JSON with
``--json``), its one-line failures and their log, and the OS user as the actor of what it does."""

from __future__ import annotations

import json
import sys

from studio.settings import Settings, load_settings


def settings_of(args) -> Settings:
    """Settings from the environment, overridden by any ``--<setting>`` flag given."""
    return load_settings(**{name: getattr(args, name, None) for name in Settings.model_fields})


def store_of(args):
    from studio.store import open_store

    return open_store(settings_of(args))


def report(args, payload: dict, human: str) -> None:
    print(json.dumps(payload, indent=None if args.json else 1, default=str) if args.json else human)


def fail(args, message: str, code: int = 2, details: dict | None = None) -> int:
    """``details``: what else a script needs to see why (a refused import's ``errors`` and ``removed``)."""
    if getattr(args, "json", False):
        print(json.dumps({"error": message, **(details or {})}, default=str))
    print(f"error: {message}", file=sys.stderr)
    return code


def details_log(args, error: BaseException):
    """Appends ``error``'s traceback to the CLI's log (STUDIO_HOME/logs/cli.log; the temporary folder when the
    settings themselves failed) and returns its path, so the terminal gets one line and the details stay."""
    import tempfile
    import traceback
    from datetime import datetime
    from pathlib import Path

    try:
        folder = settings_of(args).home / "logs"
        folder.mkdir(parents=True, exist_ok=True)
    except Exception:  # noqa: BLE001 - wherever the settings point, the details must be written somewhere
        folder = Path(tempfile.gettempdir())
    path = folder / "cli.log"
    # The command's name only: its arguments may hold a token.
    heading = f"--- {datetime.now().isoformat(timespec='seconds')} {getattr(args.run, '__name__', 'studio')}\n"
    with open(path, "a", encoding="utf-8") as log:
        log.write(heading + "".join(traceback.format_exception(error)))
    return path


def os_user() -> str | None:
    """Who runs the command, for the audit trail: the OS account (None when the system cannot tell)."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no such user in the passwd database (some containers)
        return None


def export_file(args, export, ref, refused: type[Exception]) -> int:
    """``export(store, ref, out or None) -> path`` for the ``export`` commands; ``refused`` is its clear error."""
    from pathlib import Path

    try:
        path = export(store_of(args), ref, Path(args.out) if args.out else None)
    except refused as error:
        return fail(args, str(error))
    report(args, {"path": str(path)}, str(path))
    return 0
