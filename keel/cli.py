"""The ``keel`` command: the demo, and the model registry (list versions, promote or roll back)."""

import argparse
import sys
from datetime import date

from keel.simulator import WORLD_START

DEMO_DAYS = 42  # six weeks: two of training, the label delay, a week of test, and fresh days to score


def _console():
    from rich.console import Console

    # Paths and commands are never wrapped; logs (not a terminal) get 120 columns, not 80.
    return Console(file=sys.stdout, soft_wrap=True, width=None if sys.stdout.isatty() else 120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="keel", description="Keel: a data science platform on Dagster.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the main job over a window of days and print a summary")
    demo.add_argument("--start", type=date.fromisoformat, default=WORLD_START, help="first day (YYYY-MM-DD)")
    demo.add_argument("--days", type=int, default=DEMO_DAYS, help="number of days (default: %(default)s)")
    models = commands.add_parser("models", help="the model registry: versions, stages, promotion")
    actions = models.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="every version with its stage and metrics, oldest first")
    promote = actions.add_parser(
        "promote", help="put an approved version in production (a rollback re-promotes an earlier one)"
    )
    promote.add_argument("tag", help="the version, e.g. fraud_detector:abc123 (see `keel models list`)")
    promote.add_argument("--reason", required=True, help="why, for the record")
    args = parser.parse_args(argv)

    from resources.environments import use_local_homes

    use_local_homes()
    if args.command == "demo":
        from keel import demo as demo_module

        needed = demo_module.days_needed()
        if args.days < needed:
            parser.error(
                f"--days must be at least {needed}: training needs its train, gap and test days, "
                "and the test days' fraud flags arrive a label delay later"
            )
        # The console keeps the real stdout (the demo sends step output, dbt's, to a log file).
        return demo_module.run(demo_module.Window(args.start, args.days), _console())

    from keel import registry_commands

    if args.action == "list":
        return registry_commands.list_versions(_console())
    return registry_commands.promote(args.tag, args.reason, _console())


if __name__ == "__main__":
    sys.exit(main())
