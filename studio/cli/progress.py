"""What a long command (`train`, `eval metrics`, `generate`, `data import`) shows while it works, on stderr.

On a terminal a tqdm bar (what it is doing, done/total, elapsed, and the details the command gives: loss, time
left); anywhere else — a log file, CI, a pipe — plain lines, at most one every ``LINE_SECONDS`` (and the first and
the last), so a long run does not fill a log; nothing with ``--json`` or ``-q/--quiet``. Lines a command says
(``say``: the worker's own log lines) are shown in both forms, above the bar on a terminal.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, Iterable, TextIO

LINE_SECONDS = 5.0  # a progress line at most this often when stderr is not a terminal
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"
NO_TOTAL_FORMAT = "{desc} [{elapsed}{postfix}]"  # before the total is known (a model loading): no "0/?" bar
PERCENT_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| [{elapsed}{postfix}]"  # a fraction: no "40/100" beside it


class Progress:
    """``update(done, total, what, details)`` as the work goes on, ``say(line)`` for a line of its own; ``close()``
    (or ``with``) at the end. ``label`` comes before every line ("run 3")."""

    def __init__(self, args, label: str = "", unit: str = "it", stream: TextIO | None = None,
                 every: float = LINE_SECONDS):
        # The libraries' own bars (transformers' "Loading weights", the Hub's downloads) would garble this one and
        # fill a log with carriage returns; this progress says what loads instead. A value the person set wins.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        self.stream = stream or sys.stderr
        self.label, self.unit, self.every = label, unit, every
        if getattr(args, "json", False) or getattr(args, "quiet", False):
            self.form = "silent"
        else:
            self.form = "bar" if _is_terminal(self.stream) else "lines"
        self.bar = None
        self.shown: tuple | None = None  # the last update: (done, total, what, details)
        self.lined_at: float | None = None  # when the last plain progress line was written
        self.last_line = ""

    # ------------------------------------------------------------------ what the command calls

    def update(self, done: int, total: int | None, what: str, details: Iterable[str] = ()) -> None:
        """``done`` of ``total`` (None or 0: not known yet, e.g. while a model loads); ``what`` it is doing."""
        details = [d for d in details if d]
        self.shown = (done, total, what, details)
        if self.form == "bar":
            self._draw(done, total, what, details)
        elif self.form == "lines":
            line = self._line(done, total, what, details)
            finished = bool(total) and done >= total
            now = time.monotonic()
            due = self.lined_at is None or now - self.lined_at >= self.every or (finished and line != self.last_line)
            if due and line != self.last_line:
                self._write(line)
                self.lined_at, self.last_line = now, line

    def say(self, line: str) -> None:
        """A line of its own (a worker's log line), shown in every form but silent."""
        if self.form == "silent":
            return
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            self._write(line)

    def fraction(self) -> Callable[[float, str], None]:
        """A ``progress(fraction, message)`` callback (the services' import, push and metrics progress) drawn as a
        percentage."""
        return lambda fraction, message: self.update(round(100 * max(0.0, min(1.0, fraction))), 100, message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, error_type, *_exc) -> None:
        if error_type is None and self.unit == "%" and self.shown and self.shown[0] < 100:
            self.update(100, 100, *self.shown[2:])  # the service returned: its work is done, whatever it last said
        self.close()

    # ------------------------------------------------------------------ how

    def _prefix(self) -> str:
        return f"{self.label}: " if self.label else ""

    def _line(self, done: int, total: int | None, what: str, details: list[str]) -> str:
        counted = (f" {done}%" if self.unit == "%" else f" {done}/{total}") if total else ""
        return f"{self._prefix()}{what}{counted}" + "".join(f" · {d}" for d in details)

    def _draw(self, done: int, total: int | None, what: str, details: list[str]) -> None:
        shape = (PERCENT_FORMAT if self.unit == "%" else BAR_FORMAT) if total else NO_TOTAL_FORMAT
        if self.bar is None:
            from tqdm import tqdm  # only on a terminal: `studio --help` and scripted runs never import it

            self.bar = tqdm(total=total or None, file=self.stream, unit=self.unit, bar_format=shape,
                            desc=f"{self._prefix()}{what}", dynamic_ncols=True, leave=True)
        self.bar.total, self.bar.bar_format = total or None, shape
        self.bar.n = done
        self.bar.set_description_str(f"{self._prefix()}{what}", refresh=False)
        self.bar.set_postfix_str(" · ".join(details), refresh=False)
        self.bar.refresh()

    def _write(self, line: str) -> None:
        print(line, file=self.stream, flush=True)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or odd stream: no bar
        return False
