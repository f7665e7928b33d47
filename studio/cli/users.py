"""``studio users``: the people of a sign-in users file."""

from __future__ import annotations

import sys

from studio.cli.app import Commands, arg
from studio.cli.shared import fail, report, settings_of
from studio.roles import ROLES

commands = Commands()
commands.group("users", "sign-in: add, remove and list the people of a users file")

PASSWORD_STDIN = arg("--password-stdin", action="store_true", help="read the password from standard input")
USERS_FILE = arg("--file", metavar="FILE", help="the users file (default: the one STUDIO_USERS names)")


def _users_file(args):
    """The users file a ``studio users`` command edits: ``--file``, else the one ``STUDIO_USERS`` names."""
    from studio.auth import Users

    path = Users.file_of(args.file or settings_of(args).users)
    if path is None:
        raise ValueError("name the users file with --file FILE (or set STUDIO_USERS to its path); then start the "
                         "studio with STUDIO_USERS=FILE to turn sign-in on")
    return path


def _new_password(args) -> str:
    import getpass

    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        raise ValueError("the two passwords differ")
    return first


@commands.command("users add", arg("name"),
                  arg("--role", choices=ROLES, required=True, help="editor: everything; rater: the rating page only"),
                  PASSWORD_STDIN, USERS_FILE, help="add a person (or change their role or password)", json=False)
def cmd_users_add(args) -> int:
    from studio.auth import AuthError, write_user

    try:
        path = _users_file(args)
        write_user(path, args.name, args.role, _new_password(args))
    except (AuthError, ValueError) as error:
        return fail(args, str(error))
    print(f"{args.name} ({args.role}) saved in {path}")
    return 0


@commands.command("users remove", arg("name"), PASSWORD_STDIN, USERS_FILE, help="remove a person", json=False)
def cmd_users_remove(args) -> int:
    from studio.auth import AuthError, remove_user

    try:
        path = _users_file(args)
        removed = remove_user(path, args.name)
    except (AuthError, ValueError) as error:
        return fail(args, str(error))
    if not removed:
        return fail(args, f"no user {args.name} in {path}")
    print(f"{args.name} removed from {path}: their next request signs them out")
    return 0


@commands.command("users list", USERS_FILE, help="the people and their roles")
def cmd_users_list(args) -> int:
    from studio.auth import AuthError, Users

    try:
        found = [{"name": u.name, "role": u.role} for u in Users(str(_users_file(args))).all()]
    except (AuthError, ValueError) as error:
        return fail(args, str(error))
    report(args, {"users": found}, "\n".join(f"{u['name']:<24} {u['role']}" for u in found) or "no users")
    return 0


@commands.command("users hash", PASSWORD_STDIN, json=False,
                  help="print a password hash, for a NAME:ROLE:HASH entry in STUDIO_USERS")
def cmd_users_hash(args) -> int:
    from studio.auth import AuthError, hash_password

    try:
        print(hash_password(_new_password(args)))
    except (AuthError, ValueError) as error:
        return fail(args, str(error))
    return 0
