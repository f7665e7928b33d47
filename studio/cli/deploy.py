"""``studio deploy``: serve checkpoints behind an OpenAI-compatible API, stop and list them, their API keys, and
their feedback made a dataset."""

from __future__ import annotations

from studio.cli.app import Commands, arg
from studio.cli.shared import fail, os_user, report, store_of

commands = Commands()
commands.group("deploy", "serve checkpoints behind an OpenAI-compatible API: start, list, show, stop, keys, feedback")
commands.group("deploy keys", "API keys of the deployments: add (shown once), list, revoke")

DEPLOYMENT_ID = arg("deployment_id", type=int)
START_KEYS = ("deployment_id", "name", "url", "models", "quantize", "weight_bytes", "status")


def _text(view: dict) -> str:
    models = ", ".join(m["name"] for m in view["models"])
    text = (f"deployment {view['deployment_id']} ({view['name']}): {view['status']}"
            + (f" at {view['url']}" if view["url"] else "") + f"; models {models}; quantize {view['quantize']}")
    return text + (f"\n{view['error']}" if view.get("error") else "")


def _refused(args, error: Exception) -> int:
    return fail(args, str(error))


@commands.command(
    "deploy start",
    arg("ref", metavar="RUN_ID[:STEP]", help="the checkpoint to serve (a run's last without STEP)"),
    arg("--variant", action="append", default=[], metavar="RUN_ID[:STEP]",
        help="another checkpoint of the same base model to serve beside it, or 'base' for the base model itself"),
    arg("--name", help="the deployment's name (default: run-ID)"),
    arg("--quantize", default="none", metavar="none|int8|nf4", help="weight quantisation (default: none)"),
    arg("--port", dest="deploy_port", type=int, help="the port it listens on (default: a free one)"),
    arg("--host", dest="deploy_host", default="127.0.0.1",
        help="the interface it listens on (default 127.0.0.1; 0.0.0.0 for every interface)"),
    help="start serving checkpoints (waits until the deployment answers)")
def cmd_deploy_start(args) -> int:
    from studio.serving.service import DeployError, start_deployment

    try:
        view = start_deployment(store_of(args), [args.ref, *args.variant], name=args.name, quantize=args.quantize,
                                host=args.deploy_host, port=args.deploy_port, actor=os_user())
    except DeployError as error:
        return _refused(args, error)
    report(args, {key: view[key] for key in START_KEYS}, _text(view))
    return 0


@commands.command("deploy list", arg("--project", metavar="NAME", help="only this project's deployments"))
def cmd_deploy_list(args) -> int:
    from studio.serving.service import list_deployments

    found = list_deployments(store_of(args), args.project)
    report(args, {"deployments": found}, "\n".join(_text(view) for view in found) or "no deployments yet")
    return 0


@commands.command("deploy show", DEPLOYMENT_ID)
def cmd_deploy_show(args) -> int:
    from studio.serving.quality import quality_panel
    from studio.serving.service import DeployError, get_deployment, reap_deployments

    store = store_of(args)
    try:
        reap_deployments(store, only=args.deployment_id)
        view = {**get_deployment(store, args.deployment_id), "quality": quality_panel(store, args.deployment_id)}
    except DeployError as error:
        return _refused(args, error)
    report(args, view, _text(view))
    return 0


@commands.command("deploy stop", DEPLOYMENT_ID)
def cmd_deploy_stop(args) -> int:
    from studio.serving.service import DeployError, stop_deployment

    try:
        view = stop_deployment(store_of(args), args.deployment_id, actor=os_user())
    except DeployError as error:
        return _refused(args, error)
    report(args, view, _text(view))
    return 0


@commands.command("deploy restart", DEPLOYMENT_ID,
                  help="start a stopped or failed deployment again (waits until it answers)")
def cmd_deploy_restart(args) -> int:
    from studio.serving.service import DeployError, restart_deployment

    try:
        view = restart_deployment(store_of(args), args.deployment_id, actor=os_user())
    except DeployError as error:
        return _refused(args, error)
    report(args, {key: view[key] for key in START_KEYS}, _text(view))
    return 0


@commands.command("deploy delete", DEPLOYMENT_ID,
                  help="delete a stopped deployment with its served requests and feedback")
def cmd_deploy_delete(args) -> int:
    from studio.serving.service import DeployError, delete_deployment

    try:
        delete_deployment(store_of(args), args.deployment_id, actor=os_user())
    except DeployError as error:
        return _refused(args, error)
    report(args, {"deployment_id": args.deployment_id, "deleted": True}, f"deployment {args.deployment_id} deleted")
    return 0


@commands.command("deploy feedback", DEPLOYMENT_ID,
                  arg("--to-dataset", action="store_true",
                      help="make a dataset version of the feedback (liked answers, liked-vs-disliked pairs, thumbs)"),
                  arg("--name", help="the dataset's name (default: feedback-<deployment name>)"),
                  help="the feedback on a deployment's answers; --to-dataset makes a dataset version of it")
def cmd_deploy_feedback(args) -> int:
    from studio.serving.feedback import FeedbackError, feedback_summary, feedback_to_dataset
    from studio.serving.service import DeployError

    store = store_of(args)
    try:
        if not args.to_dataset:
            summary = feedback_summary(store, args.deployment_id)
            report(args, summary, f"deployment {args.deployment_id}: {summary['up']} thumbs up, {summary['down']} "
                                  f"thumbs down of {summary['requests']} requests (--to-dataset makes a dataset)")
            return 0
        made = feedback_to_dataset(store, args.deployment_id, actor=os_user(), name=args.name)
    except (DeployError, FeedbackError) as error:
        return _refused(args, error)
    counts = ", ".join(f"{n} {kind}" for kind, n in made["counts"].items())
    report(args, made, f"dataset '{made['dataset']}' v{made['version']}: {counts}")
    return 0


# API keys: the functions are studio.serving.keys' (the deployments' application checks the keys).

@commands.command("deploy keys add", arg("name", help="who or what the key is for"),
                  arg("--rate", type=int, metavar="PER_MINUTE", help="requests per minute (default: the deployment's)"),
                  help="make an API key (printed once: only its hash is kept)")
def cmd_deploy_keys_add(args) -> int:
    from studio.serving.keys import add_key

    try:
        key = add_key(store_of(args), args.name, actor=os_user(), rate_per_minute=args.rate)
    except ValueError as error:
        return _refused(args, error)
    report(args, {"name": args.name, "key": key}, f"{key}\n(the key for '{args.name}': shown this once, copy it now)")
    return 0


@commands.command("deploy keys list")
def cmd_deploy_keys_list(args) -> int:
    from studio.serving.keys import list_keys

    keys = list_keys(store_of(args))
    report(args, {"keys": keys}, "\n".join(f"{k['name']} ({k.get('prefix', '')}...)"
                                           + (" revoked" if k.get("revoked_at") else "") for k in keys)
           or "no API keys yet")
    return 0


@commands.command("deploy keys revoke", arg("name"))
def cmd_deploy_keys_revoke(args) -> int:
    from studio.serving.keys import revoke_key

    try:
        revoke_key(store_of(args), args.name, actor=os_user())
    except ValueError as error:
        return _refused(args, error)
    report(args, {"name": args.name, "revoked": True}, f"key '{args.name}' revoked")
    return 0
