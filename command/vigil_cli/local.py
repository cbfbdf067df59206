"""`vigil local ...`: the whole system on one machine, no cluster (the local
runtime, `vigil_operator.local`).

`vigil local up` runs the control process (Models, reconcile and autoscaler
loops, unit processes, client endpoint, metrics, control API); the other
subcommands talk to it over the control API, the way kubectl talks to an API
server. Heavy modules are imported inside the commands, so `vigil local get`
starts fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from vigil_cli.main import Command, lazy
from vigil_operator.local.settings import LocalConfig

LOCAL = LocalConfig()  # the defaults the flags show

if TYPE_CHECKING:
    Verbs = argparse._SubParsersAction[argparse.ArgumentParser]
    from vigil_operator.local.control import LocalRuntime
    from vigil_operator.local.store import ModelStore

MODEL_KINDS = ("models", "model", "vmodel", "vmodels", "models.vigil.dev")


def _api_default() -> str:
    from vigil_operator.local.api import DEFAULT_ADDRESS, ENV_ADDRESS

    return os.environ.get(ENV_ADDRESS, DEFAULT_ADDRESS)


def _client_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--api",
        default=None,
        metavar="ADDR",
        help="control API of `vigil local up`: HOST:PORT or unix:PATH "
        "(default $VIGIL_LOCAL_API or 127.0.0.1:7070)",
    )
    return common


def _namespace_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--namespace", default="default", help="namespace (default: default)")


def add_local_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    local = sub.add_parser(
        "local",
        help="run the whole system on this machine, no cluster (vigil local up)",
        description="The local runtime: units as local `vigil serve` processes in simulated "
        "zones, driven by the operator's own core.",
    )
    verbs = local.add_subparsers(dest="verb", required=True, metavar="VERB")
    _add_up(verbs)
    client = _client_options()
    _add_apply(verbs, client)
    _add_get(verbs, client)
    _add_delete(verbs, client)
    _add_zone(verbs, client)
    _add_events(verbs, client)


def _add_up(verbs: Verbs) -> None:
    up = verbs.add_parser(
        "up",
        help="run the control process (until Ctrl-C)",
        description="Run Models as local `vigil serve` units in simulated zones: reconcile, "
        "autoscale, route clients, publish metrics, until SIGINT or SIGTERM.",
    )
    up.add_argument(
        "--zones",
        default=",".join(LOCAL.zones),
        help="simulated zones, comma-separated (default: %(default)s)",
    )
    up.add_argument(
        "--host", default=LOCAL.host, help="address for the client endpoint and metrics"
    )
    up.add_argument("--port", type=int, default=LOCAL.port, help="client endpoint (gRPC) port")
    up.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help=f"Prometheus port (default $VIGIL_METRICS_PORT or {LOCAL.metrics_port})",
    )
    up.add_argument(
        "--api",
        default=None,
        metavar="ADDR",
        help="control API address: HOST:PORT or unix:PATH (default $VIGIL_LOCAL_API or "
        "127.0.0.1:7070)",
    )
    up.add_argument(
        "--state-dir",
        metavar="DIR",
        help="keep Models (models.json) and unit logs here across restarts "
        "(default: a temporary folder, removed on exit)",
    )
    _add_unit_flags(up)
    up.add_argument("-f", "--filename", action="append", default=[], help="apply at start")
    up.add_argument("-v", "--verbose", action="store_true", help="log more")
    up.set_defaults(func=_run("up_command"))


def _add_unit_flags(up: argparse.ArgumentParser) -> None:
    """How `vigil local up` runs and stops units."""
    up.add_argument(
        "--grace-seconds",
        type=float,
        default=LOCAL.grace_s,
        help="drain time for a stopping unit before SIGKILL (default %(default)s)",
    )
    up.add_argument(
        "--reconcile-interval",
        type=float,
        default=None,
        help="seconds between reconciles (default $VIGIL_RECONCILE_INTERVAL or "
        f"{LOCAL.operator.reconcile_interval_s:g})",
    )
    up.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra `vigil serve` flag for every unit, e.g. --serve-arg=--max-batch-size=4",
    )
    up.add_argument(
        "--serving-nice",
        type=int,
        default=0,
        metavar="N",
        help="run Ready units N nicer than starting ones, so that on a small, saturated "
        "machine a new unit is not starved by the load it is meant to take (default 0)",
    )


def _add_apply(verbs: Verbs, client: argparse.ArgumentParser) -> None:
    apply = verbs.add_parser(
        "apply",
        parents=[client],
        help="create or update Models from YAML (as kubectl apply -f)",
        description="Create or update Models from YAML files, checked against the CRD's "
        "schema and rules. A plain path in artifact.uri is relative to the YAML file.",
    )
    apply.add_argument(
        "-f", "--filename", action="append", required=True, help="YAML file, or - for stdin"
    )
    _namespace_options(apply)
    apply.set_defaults(func=_run("apply_command"))


def _add_get(verbs: Verbs, client: argparse.ArgumentParser) -> None:
    get = verbs.add_parser(
        "get",
        parents=[client],
        help="list models, units or zones (as kubectl get)",
    )
    get.add_argument("kind", choices=[*MODEL_KINDS, "units", "unit", "zones", "zone"])
    get.add_argument("name", nargs="?", help="one Model")
    _namespace_options(get)
    get.add_argument("-A", "--all-namespaces", action="store_true")
    get.add_argument("-o", "--output", choices=["wide", "yaml", "json"], help="output format")
    get.set_defaults(func=_run("get_command"))


def _add_delete(verbs: Verbs, client: argparse.ArgumentParser) -> None:
    delete = verbs.add_parser(
        "delete", parents=[client], help="delete Models; their units drain and stop"
    )
    delete.add_argument("kind", choices=MODEL_KINDS)
    delete.add_argument("names", nargs="+", metavar="NAME")
    _namespace_options(delete)
    delete.set_defaults(func=_run("delete_command"))


def _add_zone(verbs: Verbs, client: argparse.ArgumentParser) -> None:
    zone = verbs.add_parser(
        "zone",
        parents=[client],
        help="simulate a zone outage (down) or its recovery (up)",
        description="down: the zone's units are killed (SIGKILL, as an outage) and its node "
        "turns NotReady, so its share moves to the healthy zones. up: it is back, and the "
        "units rebalance surge first.",
    )
    zone.add_argument("action", choices=["down", "up"])
    zone.add_argument("zone", metavar="ZONE")
    zone.add_argument("-o", "--output", choices=["json"], help="print the runtime's answer")
    zone.set_defaults(func=_run("zone_command"))


def _add_events(verbs: Verbs, client: argparse.ArgumentParser) -> None:
    events = verbs.add_parser(
        "events", parents=[client], help="a Model's recent Events (scaling, zones, phase)"
    )
    events.add_argument("name", metavar="NAME")
    _namespace_options(events)
    events.set_defaults(func=_run("events_command"))


def _run(name: str) -> Command:
    """`lazy`, with the control API's address defaulted from the environment."""
    command = lazy("vigil_cli.local", name)

    def run(args: argparse.Namespace) -> int:
        if getattr(args, "api", "") is None:
            args.api = _api_default()
        return command(args)

    return run


# -- vigil local up ------------------------------------------------------------------


def up_command(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import shutil
    import tempfile
    from dataclasses import replace
    from pathlib import Path

    from vigil_operator.core.spec import ZONE_RE
    from vigil_operator.local.store import ModelStore, load_validator
    from vigil_operator.settings import OperatorSettings

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    if not args.verbose:
        logging.getLogger("aiohttp").setLevel(logging.WARNING)
    zones = [z.strip() for z in args.zones.split(",") if z.strip()]
    if not zones or len(set(zones)) != len(zones):
        raise ValueError("--zones needs distinct zone names, e.g. zone-a,zone-b,zone-c")
    for z in zones:
        if not ZONE_RE.match(z) or len(z) > 63:
            raise ValueError(f"zone {z!r} is not a zone label value")
    operator = OperatorSettings.from_env(os.environ)
    interval = args.reconcile_interval
    if interval is None:
        interval = (
            operator.reconcile_interval_s
            if "VIGIL_RECONCILE_INTERVAL" in os.environ
            else LOCAL.operator.reconcile_interval_s
        )
    metrics_port = args.metrics_port if args.metrics_port is not None else operator.metrics_port
    operator = replace(operator, reconcile_interval_s=interval, metrics_port=metrics_port)
    persist = args.state_dir is not None
    state_dir = Path(args.state_dir) if persist else Path(tempfile.mkdtemp(prefix="vigil-local-"))
    store = ModelStore(load_validator(), state_dir / "models.json" if persist else None)
    config = LocalConfig(
        zones=tuple(zones),
        host=args.host,
        port=args.port,
        metrics_port=metrics_port,
        state_dir=state_dir,
        grace_s=args.grace_seconds,
        serve_args=tuple(args.serve_arg),
        serving_nice=max(0, args.serving_nice),
        operator=operator,
    )
    try:
        return asyncio.run(_up(config, store, args))
    finally:
        if not persist:
            shutil.rmtree(state_dir, ignore_errors=True)


async def _up(config: LocalConfig, store: ModelStore, args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import signal

    from vigil_operator.local import api
    from vigil_operator.local.control import LocalRuntime
    from vigil_operator.local.units import signal_group

    log = logging.getLogger("vigil.local")
    runtime = LocalRuntime(config, store)
    for warning in await runtime.start():
        log.warning("%s", warning)
    try:
        runner, api_address = await api.serve(runtime, args.api)
    except BaseException:
        await runtime.stop()
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    first: list[float] = []

    def on_signal() -> None:
        # A second Ctrl-C stops at once; one within a second of the first is the
        # same keypress seen twice (a terminal's group signal and a parent's).
        if first and loop.time() - first[0] > 1.0:
            log.warning("stopping now: killing every unit")
            for ctrl in runtime.controllers.values():
                for unit in ctrl.units.values():
                    if unit.pid is not None:
                        signal_group(unit.pid, signal.SIGKILL)
            os._exit(130)
        first[:] = first or [loop.time()]
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    where = ", ".join(config.zones)
    print(
        f"vigil local: zones {where}\n"
        f"  client endpoint  {runtime.client_address}   "
        f"(vigil detect --target {runtime.client_address} IMAGE...)\n"
        f"  metrics          http://{config.host}:{runtime.metrics_port}/metrics\n"
        f"  control API      {api_address}   (vigil local apply -f model.yaml)\n"
        f"  unit logs        {config.state_dir / 'logs'}\n"
        "Ctrl-C stops every unit.",
        flush=True,
    )
    try:
        await _apply_files(runtime, args.filename)
        await stop.wait()
        units = sum(len(c.units) for c in runtime.controllers.values())
        log.info("stopping: draining %d units", units)
    finally:
        await runner.cleanup()
        await runtime.stop()
    log.info("stopped")
    return 0


async def _apply_files(runtime: LocalRuntime, paths: list[str]) -> None:
    """`vigil local up -f`: what cannot be read or applied is logged and skipped."""
    import logging

    from vigil_operator.local.documents import DocumentError, read_documents
    from vigil_operator.local.store import Invalid

    log = logging.getLogger("vigil.local")
    for path in paths:
        try:
            docs = read_documents(path)
        except DocumentError as exc:
            log.error("%s", exc)
            continue
        for doc in docs:
            try:
                result, obj = await runtime.apply(doc, "default")
            except Invalid as exc:
                log.error("%s: %s", path, exc)
                continue
            print(f"model.vigil.dev/{obj['metadata']['name']} {result}", flush=True)


# -- the clients -----------------------------------------------------------------------


def apply_command(args: argparse.Namespace) -> int:
    from vigil_operator.local.api import ApiClient, ApiError
    from vigil_operator.local.documents import DocumentError, artifact_file, read_documents

    client = ApiClient(args.api)
    failed = False
    for path in args.filename:
        try:
            docs = read_documents(path)
        except DocumentError as exc:
            print(f"vigil local apply: error: {exc}", file=sys.stderr)
            failed = True
            continue
        for doc in docs:
            try:
                reply = client.apply(doc, args.namespace)
            except ApiError as exc:
                print(f"vigil local apply: error: {path}: {exc}", file=sys.stderr)
                failed = True
                continue
            obj = reply["object"]
            print(f"model.vigil.dev/{obj['metadata']['name']} {reply['result']}")
            model = artifact_file(obj["spec"]["artifact"]["uri"])
            if not os.path.exists(model):
                print(
                    f"Warning: {model} does not exist (yet): units cannot start without it",
                    file=sys.stderr,
                )
    return 1 if failed else 0


def _dump(value: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(value, indent=2)
    import yaml

    return str(yaml.safe_dump(value, sort_keys=False)).rstrip()


def get_command(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from vigil_operator.local import table
    from vigil_operator.local.api import ApiClient, ApiError

    client = ApiClient(args.api)
    now = datetime.now(UTC)
    if args.kind in ("units", "unit"):
        units = client.units()
        if not args.all_namespaces:
            units = [u for u in units if u["namespace"] == args.namespace]
        if args.name:
            units = [u for u in units if u["model"] == args.name]
        if args.output in ("json", "yaml"):
            print(_dump(units, args.output))
        elif units:
            print(table.units_table(units, now))
        else:
            print("No units found.", file=sys.stderr)
        return 0
    if args.kind in ("zones", "zone"):
        zones = client.zones()
        print(
            _dump(zones, args.output)
            if args.output in ("json", "yaml")
            else table.zones_table(zones)
        )
        return 0
    if args.name:
        try:
            models = [client.model(args.namespace, args.name)]
        except ApiError as exc:
            print(f"Error from server (NotFound): {exc}", file=sys.stderr)
            return 1
    else:
        models = client.models(None if args.all_namespaces else args.namespace)
    if args.output in ("json", "yaml"):
        value: Any = (
            models[0] if args.name else {"apiVersion": "v1", "kind": "List", "items": models}
        )
        print(_dump(value, args.output))
        return 0
    if not models:
        where = "" if args.all_namespaces else f" in {args.namespace} namespace"
        print(f"No resources found{where}.", file=sys.stderr)
        return 0
    print(
        table.models_table(models, now, wide=args.output == "wide", namespaces=args.all_namespaces)
    )
    return 0


def delete_command(args: argparse.Namespace) -> int:
    from vigil_operator.local.api import ApiClient, ApiError

    client = ApiClient(args.api)
    failed = False
    for name in args.names:
        try:
            client.delete(args.namespace, name)
        except ApiError as exc:
            print(f"Error from server (NotFound): {exc}", file=sys.stderr)
            failed = True
            continue
        print(f'model.vigil.dev "{name}" deleted')
    return 1 if failed else 0


def zone_command(args: argparse.Namespace) -> int:
    from vigil_operator.local.api import ApiClient

    reply = ApiClient(args.api).zone(args.zone, args.action)
    if args.output == "json":
        print(json.dumps(reply))
        return 0
    if args.action == "up":
        print(f"zone {args.zone} up" + ("" if reply["changed"] else " (it was up)"))
        return 0
    killed = reply["killed"]
    pids = ", ".join(str(k["pid"]) for k in killed)
    text = f"zone {args.zone} down" + ("" if reply["changed"] else " (it was down)")
    if killed:
        text += f": killed {len(killed)} unit{'s' if len(killed) != 1 else ''} (pid {pids})"
        text += f"; {reply['inflight']} calls were in flight on them"
    print(text)
    return 0


def events_command(args: argparse.Namespace) -> int:
    from vigil_operator.local import table
    from vigil_operator.local.api import ApiClient

    items = ApiClient(args.api).events(args.namespace, args.name)
    rows = [[e["time"], e["type"], e["reason"], e["message"]] for e in items]
    print(table.format_table(["TIME", "TYPE", "REASON", "MESSAGE"], rows))
    return 0
