"""``studio projects``: list, create and delete projects; who did what."""

from __future__ import annotations

from studio.cli.app import Commands, arg
from studio.cli.shared import fail, os_user, report, store_of

commands = Commands()
commands.group("projects", "list, create and delete projects; who did what (activity)")


def _activity_line(action: dict) -> str:
    where = f" [{action['project']}]" if action["project"] else ""
    return (f"{action['at'][:19].replace('T', ' ')}  {action['actor'] or '(unknown)':<16} {action['action']:<24} "
            f"{action['target']}{where}")


def _what_deleting_removes(projects: list[dict], name: str) -> str:
    found = next((p for p in projects if p["name"] == name), None)
    if found is None:
        return f"no project named '{name}' (see `studio projects list`)"
    return (f"deleting project '{name}' removes everything in it: {found['datasets']} datasets, {found['runs']} runs "
            f"and {found['sample_sets']} sample sets, with their versions, checkpoints, samples, ratings and files. "
            "Nothing was deleted; run again with --yes to confirm")


@commands.command("projects list", help="every project with what it holds")
def cmd_projects_list(args) -> int:
    from studio.projects import list_projects

    found = list_projects(store_of(args))
    report(args, {"projects": found}, "\n".join(
        f"{p['name']:<30} {p['datasets']} datasets, {p['runs']} runs, {p['sample_sets']} sample sets"
        for p in found) or "no projects yet")
    return 0


@commands.command("projects create", arg("name"), help="a new, empty project")
def cmd_projects_create(args) -> int:
    from studio.projects import ProjectError, create_project

    try:
        made = create_project(store_of(args), args.name, actor=os_user())
    except ProjectError as error:
        return fail(args, str(error))
    report(args, made, f"project '{made['name']}' created")
    return 0


@commands.command("projects delete", arg("name"),
                  arg("--yes", action="store_true", help="confirm: nothing is deleted without it"),
                  help="a project and everything in it, files included (refused while one of its runs is queued or "
                       "running)")
def cmd_projects_delete(args) -> int:
    from studio.projects import DeleteRefused, ProjectError, delete_project, list_projects

    store = store_of(args)
    if not args.yes:
        return fail(args, _what_deleting_removes(list_projects(store), args.name))
    try:
        gone = delete_project(store, args.name, actor=os_user())
    except (ProjectError, DeleteRefused) as error:
        return fail(args, str(error))
    report(args, gone, f"project '{gone['name']}' deleted: {gone['datasets']} datasets ({gone['versions']} "
                       f"versions), {gone['runs']} runs, {gone['sample_sets']} sample sets")
    return 0


@commands.command("projects activity", arg("name", nargs="?", help="only this project's actions"),
                  arg("--limit", type=int, default=50), help="who did what, when (newest first)")
def cmd_projects_activity(args) -> int:
    from studio.projects import project_activity

    actions = project_activity(store_of(args), args.name, args.limit)
    report(args, {"actions": actions}, "\n".join(map(_activity_line, actions)) or "no activity yet")
    return 0
