"""``studio export``: a run or checkpoint as files that load without the studio, and on to the Hub."""

from __future__ import annotations

from studio.cli.app import Commands, arg, push_flags
from studio.cli.progress import Progress
from studio.cli.shared import fail, os_user, report, store_of
from studio.models.formats import FORMATS

commands = Commands()


@commands.command(
    "export",
    arg("ref", metavar="RUN_ID[:CHECKPOINT]"),
    arg("--format", required=True, choices=FORMATS),
    arg("--out", required=True, metavar="DIR", help="a new or empty folder"),
    arg("--zip", action="store_true", help="also write DIR.zip"),
    *push_flags("--push", "also push the export to this Hub model repository (OWNER/NAME)"),
    help="a run or checkpoint as a PEFT adapter, a diffusers LoRA file or a merged full model, loadable without the "
         "studio", progress=True)
def cmd_export(args) -> int:
    from studio.generation.variants import VariantError
    from studio.sharing.export import ExportError, export_run
    from studio.sharing.hub import PushError, push_export

    store = store_of(args)
    try:
        found = export_run(store, args.ref, args.format, args.out, make_zip=args.zip, license=args.license,
                           actor=os_user())
    except (ExportError, VariantError) as error:
        return fail(args, str(error))
    human = (f"{found['format']} export of run {found['run_id']} step {found['step']}: {found['path']}"
             + (f" (and {found['zip']})" if found["zip"] else ""))
    if args.push:
        try:
            with Progress(args, label="push", unit="%") as shown:
                found["pushed"] = push_export(store, found, args.push, private=not args.public, token=args.token,
                                              progress=shown.fraction(), actor=os_user())
        except PushError as error:
            return fail(args, str(error))
        human += f"\npushed to {found['pushed']['url']} ({'private' if not args.public else 'public'})"
    report(args, found, human)
    return 0
