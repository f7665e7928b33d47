"""One way to declare a command and one way to run it.

A command module makes a ``Commands`` and decorates each handler with ``commands.command("runs show", arg(...))``:
the command's words, help and arguments sit beside the handler. ``build`` turns the modules' commands into one
argparse parser; ``run`` calls the handler of the command given (``args.run``), which returns the exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Callable, Iterable

from studio.cli.shared import details_log, fail
from studio.settings import Settings

Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Arg:
    """One ``add_argument``: a positional name or flags, and argparse's keywords."""

    names: tuple[str, ...]
    options: dict

    def add_to(self, parser) -> None:
        parser.add_argument(*self.names, **self.options)


def arg(*names: str, **options) -> Arg:
    return Arg(names, options)


@dataclass(frozen=True)
class OneOf:
    """Arguments of which exactly one is given."""

    arguments: tuple[Arg, ...]

    def add_to(self, parser) -> None:
        group = parser.add_mutually_exclusive_group(required=True)
        for argument in self.arguments:
            argument.add_to(group)


def one_of(*arguments: Arg) -> OneOf:
    return OneOf(arguments)


@dataclass(frozen=True)
class Command:
    words: tuple[str, ...]  # ("runs", "show"): a group and its command; ("train",): a command of its own;
    # ("deploy", "keys", "add"): a command of a group in a group
    handler: Handler
    arguments: tuple[Arg | OneOf, ...]
    help: str | None
    json: bool  # takes --json: the result as one JSON document on stdout
    settings: bool  # takes a --<setting> flag per setting
    progress: bool  # shows progress on stderr (cli/progress.py), so takes -q/--quiet


class Commands:
    """One module's commands, in the order ``studio --help`` lists them, and the help of their groups."""

    def __init__(self) -> None:
        self.groups: dict[str, str] = {}
        self.declared: list[Command] = []

    def group(self, name: str, help: str) -> None:
        self.groups[name] = help

    def command(self, words: str, *arguments: Arg | OneOf, help: str | None = None, json: bool = True,
                settings: bool = True, progress: bool = False) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.declared.append(Command(tuple(words.split()), handler, arguments, help, json, settings, progress))
            return handler

        return register


def add_settings_flags(parser: argparse.ArgumentParser, top_level: bool) -> None:
    # One flag per settings field, generated from the model so the CLI and the settings never disagree.
    # On subcommands an absent flag must not hide one given before the subcommand, hence SUPPRESS.
    group = parser.add_argument_group("settings (each also an environment variable STUDIO_<NAME>)")
    for name, field in Settings.model_fields.items():
        flag = f"--{name.replace('_', '-')}"
        if flag in parser._option_string_actions:  # the command's own flag (`deploy start --port`: the deployment's)
            continue
        group.add_argument(flag, dest=name, metavar=name.upper(), help=field.description,
                           default=None if top_level else argparse.SUPPRESS)


def build(modules: Iterable[Commands]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="studio", description="Gen Studio: adapt generative models without code.")
    add_settings_flags(parser, top_level=True)
    groups: dict[tuple[str, ...], argparse._SubParsersAction] = {
        (): parser.add_subparsers(dest="command", required=True)}

    def siblings(path: tuple[str, ...], helps: dict[str, str]) -> argparse._SubParsersAction:
        """The subcommands of group ``path`` (("deploy", "keys") for `deploy keys add`), made on first use."""
        if path not in groups:
            groups[path] = siblings(path[:-1], helps).add_parser(path[-1], help=helps[" ".join(path)]) \
                .add_subparsers(dest=f"{'_'.join(path)}_command", required=True)
        return groups[path]

    for module in modules:
        for command in module.declared:
            leaf = siblings(command.words[:-1], module.groups).add_parser(command.words[-1], help=command.help)
            for argument in command.arguments:
                argument.add_to(leaf)
            if command.json:
                leaf.add_argument("--json", action="store_true")
            if command.progress:
                leaf.add_argument("-q", "--quiet", action="store_true",
                                  help="no progress on stderr (a bar on a terminal, else a line every few seconds); "
                                       "errors are still said")
            if command.settings:
                add_settings_flags(leaf, top_level=False)
            leaf.set_defaults(run=command.handler)
    return parser


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def run(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Runs a command; whatever it did not expect ends in one line with the reason and where the details are."""
    from pydantic import ValidationError

    from studio.fields import describe
    from studio.models.common import quiet_import_noise

    args = parser.parse_args(argv)
    quiet_import_noise()  # `generate`, `eval metrics` ... load models here: no warnings about kernels never used
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return fail(args, "interrupted", 130)
    except BrokenPipeError:  # `studio runs list | head`: the reader has what it wanted, nothing went wrong here
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the flush at exit cannot fail again
        return 141  # as a shell reports a command ended by SIGPIPE
    except ValidationError as error:  # e.g. a STUDIO_* variable with a bad value
        return fail(args, describe(error, Settings if error.title == Settings.__name__ else None))
    except Exception as error:  # noqa: BLE001 - the point: no raw traceback on the terminal
        return fail(args, f"{_first_line(error)} (unexpected: the details are in {details_log(args, error)})", 1)


# Arguments that commands of several groups take.
RUN_ID = arg("run_id", type=int)
SET_ID = arg("set_id", type=int)


def push_flags(repo_flag: str, repo_help: str, required: bool = False) -> tuple[Arg, ...]:
    return (arg(repo_flag, metavar="REPO_ID", required=required, help=repo_help),
            arg("--public", action="store_true", help="create the repository public (default: private)"),
            arg("--token", help="a Hugging Face access token with write access (default: HF_TOKEN)"),
            arg("--license", help="the card's licence (a Hub licence id, e.g. apache-2.0; default: other)"))
