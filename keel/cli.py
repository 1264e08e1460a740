"""The ``keel`` command: the demo, the model registry (list, promote, roll back), and serving."""

import argparse
import os
import sys
from datetime import date, timedelta


def _console():
    from rich.console import Console

    # Paths and commands are never wrapped; logs (not a terminal) get 120 columns, not 80.
    return Console(file=sys.stdout, soft_wrap=True, width=None if sys.stdout.isatty() else 120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="keel", description="Keel: a data science platform on Dagster.")
    parser.add_argument(
        "--namespace",
        help="whose data to read and write (default: KEEL_NAMESPACE, else your login name locally, "
        "prod when deployed); `keel namespace` shows where it lives",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the main job over a window of days and print a summary")
    demo.add_argument(
        "--start",
        type=date.fromisoformat,
        help="first day (YYYY-MM-DD; default: the calendar's first day, KEEL_CALENDAR_START, else "
        "the days up to yesterday that give full feature windows)",
    )
    demo.add_argument("--days", type=int, help="number of days (default: up to yesterday)")
    demo.add_argument(
        "--train-days", type=int, help="days the model trains on (default: the use case's own setting)"
    )
    drift = commands.add_parser(
        "demo-drift", help="after `keel demo`: land drifted days and run the monitoring loop on them"
    )
    drift.add_argument("--days", type=int, default=2, help="drifted days to land (default: %(default)s)")
    drift.add_argument(
        "--amount-scale", type=float, default=3.0, help="spending multiplier (default: %(default)s)"
    )
    land = commands.add_parser(
        "land", help="deliver days from the simulator into the landing zone (the sensors take it from there)"
    )
    land.add_argument(
        "--day", type=date.fromisoformat, help="first day (default: the day after the last landed)"
    )
    land.add_argument("--days", type=int, default=1, help="number of days (default: %(default)s)")
    land.add_argument("--amount-scale", type=float, help="drift: multiply spending from the first day on")
    land.add_argument(
        "--card-testing", action="store_true", help="drift: add the simulator's card-testing pattern"
    )
    models = commands.add_parser("models", help="the model registry: versions, stages, promotion")
    actions = models.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="every version with its stage and metrics, oldest first")
    promote = actions.add_parser(
        "promote", help="put an approved version in production (a rollback re-promotes an earlier one)"
    )
    promote.add_argument("tag", help="the version, e.g. terminal_volume:abc123 (see `keel models list`)")
    promote.add_argument("--reason", required=True, help="why, for the record")
    serve = commands.add_parser("serve", help="serve a Bento of one of the namespace's scoring services")
    serve.add_argument(
        "service",
        nargs="?",
        help="the service, e.g. terminal_volume; its newest Bento in this namespace is served "
        "(default: the namespace's only service; `keel namespace` lists them)",
    )
    serve.add_argument("--bento", help="a Bento tag instead, e.g. terminal_volume_<namespace>:<version>")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "3000")))
    commands.add_parser("namespace", help="the namespace of this shell and where its data lives")
    new = commands.add_parser("new", help="create something new in the project")
    new_kinds = new.add_subparsers(dest="kind", required=True)
    new_model = new_kinds.add_parser(
        "model",
        help="a use case's folder, platform_assets/defs/<name>/ (defs.yaml and features.py), that trains "
        "on the demo's data as it is (the same as `dg scaffold defs keel.UseCase <name>`)",
    )
    new_model.add_argument(
        "name", help="lowercase letters, digits and underscores: it names assets and tables"
    )
    reproduce = commands.add_parser(
        "reproduce", help="train a registered version again from what it recorded and compare its metrics"
    )
    reproduce.add_argument("tag", help="the version, e.g. terminal_volume:abc123 (see `keel models list`)")
    reproduce.add_argument(
        "--current-data",
        action="store_true",
        help="read the warehouse as it is now, naming what changed, instead of the DuckLake snapshot "
        "the version was trained at (the default where one was recorded)",
    )
    args = parser.parse_args(argv)
    from pydantic import ValidationError

    from keel.local import use_local_homes
    from keel_core import settings as keel_settings

    overrides = {"namespace": args.namespace} if args.namespace else {}
    try:
        settings = keel_settings.Settings(**overrides)
        if args.command == "demo" and args.start and args.start < settings.first_day:
            # The demo's days must be partitions of the calendar: it starts with them in this process
            # (and ends with them, when their number is given: that world has no other days).
            end = args.start + timedelta(days=args.days - 1) if args.days else None
            settings = keel_settings.Settings(**overrides, calendar_start=args.start, calendar_end=end)
    except ValidationError as error:  # an invalid namespace, zone, path... named, its value not repeated
        parser.error("; ".join(map(_setting_error, error.errors())))
    keel_settings.use(settings)
    use_local_homes()
    if args.command == "namespace":
        return _namespace(settings)
    if args.command == "new":
        return _new_model(args.name)
    if args.command == "demo":
        from keel import demo as demo_module

        window = demo_module.Window.chosen(settings, args.start, args.days)
        needed = demo_module.days_needed(args.train_days)
        if window.days < needed:
            parser.error(
                f"the demo's window has {window.days} days and needs at least {needed}: training needs "
                "its train, gap and test days, and the test days' labels arrive a label delay later"
            )
        # The console keeps the real stdout (the demo sends step output, dbt's, to a log file).
        return demo_module.run(settings, window, _console(), train_days=args.train_days)

    if args.command == "demo-drift":
        from keel import demo_drift

        return demo_drift.run(settings, _console(), days=args.days, amount_scale=args.amount_scale)

    if args.command == "land":
        return _land(settings, args)

    if args.command == "reproduce":
        from keel import registry_commands

        return registry_commands.reproduce(settings, args.tag, _console(), current_data=args.current_data)

    if args.command == "serve":
        return _serve(settings, args.bento, args.service, args.host, args.port)

    from keel import registry_commands

    if args.action == "list":
        return registry_commands.list_versions(settings, _console())
    return registry_commands.promote(settings, args.tag, args.reason, _console())


def _new_model(name: str) -> int:
    from keel_core.settings import REPO_ROOT
    from platform_assets.components.scaffold import write_use_case

    try:
        written = write_use_case(REPO_ROOT / "platform_assets" / "defs" / name, name)
    except (ValueError, FileExistsError) as error:
        print(f"keel new model: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path.relative_to(REPO_ROOT)}")
    print(f"`make demo` now trains, judges, promotes and scores {name} beside the others (docs/platform.md).")
    return 0


def _setting_error(error: dict) -> str:
    message = error["msg"].removeprefix("Value error, ")
    return f"KEEL_{'_'.join(map(str, error['loc'])).upper()}: {message}" if error["loc"] else message


def _land(settings, args) -> int:
    """Deliver days from the source system (the demo world's simulator) into the landing zone of the
    environment. Only days that have ended: a source system cannot deliver a day still going on."""
    from keel.demo import source_system
    from resources.environments import landing_lake_for
    from resources.sources import LandingZone

    landing = LandingZone(lake=landing_lake_for(settings))
    last = landing.last_day()
    first = args.day or (last + timedelta(days=1) if last else settings.first_day)
    days = [first + timedelta(days=i) for i in range(args.days)]
    if unfinished := [day for day in days if day > settings.last_day]:
        print(
            f"keel land: {unfinished[0]} has not ended yet ({settings.time_zone}) or is after the "
            f"calendar's end: the source system delivers a day once it is over. Days up to "
            f"{settings.last_day} can land (--day YYYY-MM-DD delivers a day again).",
            file=sys.stderr,
        )
        return 2
    upstream = source_system(settings)
    if args.amount_scale or args.card_testing:
        upstream = upstream.drifting_from(first, args.amount_scale or 1.0, args.card_testing)
    if not {f.feed for f in landing.landed()[0]} >= set(upstream.REFERENCE_FEEDS):
        for path in landing.deliver_reference(upstream):
            print(f"landed {path}")
    for day in days:
        for path in landing.deliver_day(upstream, day):
            print(f"landed {path}")
    return 0


def _namespace(settings) -> int:
    """Print the namespace and where its data lives, as `KEY=value` lines a shell can export."""
    from keel.local import dagster_home_for
    from keel_core.bentos import bento_name
    from resources.environments import lake_for, landing_lake_for

    for key, value in {
        "KEEL_ENV": settings.env,
        "KEEL_NAMESPACE": settings.namespace,
        "lake": lake_for(settings).uri,
        "landing_zone": f"{landing_lake_for(settings).uri}/landing",
        "warehouse": settings.warehouse.describe(),
        "online_store": settings.online_store,
        "calendar": f"{settings.first_day} on ({settings.time_zone})",
        "bentos": ",".join(bento_name(settings.namespace, s) for s in _services(settings)),
        "DAGSTER_HOME": dagster_home_for(settings),
    }.items():
        print(f"{key}={value}")
    return 0


def _services(settings) -> list[str]:
    """The scoring services with a Bento built in this namespace (``<service>_<namespace>``)."""
    import bentoml

    suffix = f"_{settings.namespace}"
    return sorted(
        {b.tag.name.removesuffix(suffix) for b in bentoml.bentos.list() if b.tag.name.endswith(suffix)}
    )


def _newest_bento(settings, service: str | None) -> str | None:
    from keel_core.bentos import bento_name

    services = _services(settings)
    if service is None and len(services) == 1:
        service = services[0]
    if service is None or service not in services:
        have = f"this namespace has Bentos of {', '.join(services)}" if services else "no Bento is built yet"
        asked = f"no Bento of {service!r}: " if service else "name a service: "
        print(
            f"keel serve: {asked}{have} (`make demo` builds them; `make serve SERVICE=<name>`)",
            file=sys.stderr,
        )
        return None
    return f"{bento_name(settings.namespace, service)}:latest"


def _serve(settings, bento: str | None, service: str | None, host: str, port: int) -> int:
    """Replace this process by `bentoml serve`, with the environment's online store and log settings:
    unsafe settings are refused first, then the Bento is ``bento`` or ``service``'s newest."""
    from pathlib import Path

    from resources.environments import service_settings
    from serving.settings import Settings as ServiceSettings
    from serving.settings import SettingsError

    environment = {**os.environ, **service_settings(settings)}
    try:
        ServiceSettings.from_env(environment)  # `bentoml serve` checks again; failing here is quicker to read
    except SettingsError as error:
        print(f"keel serve: {error}", file=sys.stderr)
        return 2
    bento = bento or _newest_bento(settings, service)
    if bento is None:
        return 2
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    command = [bentoml, "serve", bento, "--host", host, "--port", str(port)]
    print(f"serving {bento} on http://{host}:{port} ({' '.join(command[1:])})", flush=True)
    os.execve(bentoml, command, environment)


if __name__ == "__main__":
    sys.exit(main())
