"""The ``keel`` command: the platform's own commands (later: model promotion, reproduction, …)."""

import argparse
import sys
from datetime import date

from keel.simulator import WORLD_START

DEMO_DAYS = 42  # six weeks: enough for the label delay, weekly patterns and 28-day fraud windows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="keel", description="Keel: a data science platform on Dagster.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the main job over a window of days and print a summary")
    demo.add_argument("--start", type=date.fromisoformat, default=WORLD_START, help="first day (YYYY-MM-DD)")
    demo.add_argument("--days", type=int, default=DEMO_DAYS, help="number of days (default: %(default)s)")
    args = parser.parse_args(argv)

    if args.command == "demo":
        from rich.console import Console

        from keel import demo as demo_module

        if args.days < 1:
            parser.error("--days must be at least 1")
        # The console keeps the real stdout (the demo sends step output, dbt's, to a log file).
        # Paths and commands are never wrapped; logs (not a terminal) get 120 columns, not 80.
        console = Console(file=sys.stdout, soft_wrap=True, width=None if sys.stdout.isatty() else 120)
        return demo_module.run(demo_module.Window(args.start, args.days), console)
    parser.error(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
