"""``python -m rode_lightning.experiments {run,report,commands} GRID.yaml``: see ``rode_lightning/experiments``."""

from __future__ import annotations

import argparse
import sys

from rode_lightning.experiments.grid import Grid, GridError
from rode_lightning.experiments.report import write_report
from rode_lightning.experiments.runner import print_commands, run_grid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rode_lightning.experiments",
                                     description="Run a grid of variants x seeds and report it.")
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="run every (variant, seed) not done yet, then write the report")
    run.add_argument("grid")
    run.add_argument("--jobs", type=int, default=1, help="runs at once (the machine's cores or GPUs are shared)")
    run.add_argument("--index", type=int, default=None, help="run only the i-th run (a SLURM array task)")
    run.add_argument("--output", default=None, help="override the grid's output directory")
    report = sub.add_parser("report", help="write the report of the runs done so far")
    report.add_argument("grid")
    report.add_argument("--output", default=None)
    commands = sub.add_parser("commands", help="print every run's commands, or a SLURM job-array script")
    commands.add_argument("grid")
    commands.add_argument("--slurm", action="store_true")
    commands.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    try:
        grid = Grid.from_file(args.grid, args.output)
    except GridError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.action == "commands":
        print(print_commands(grid, slurm=args.slurm, grid_argument=args.grid))
        return 0
    if args.action == "run":
        if args.jobs < 1:
            print(f"error: --jobs {args.jobs}: expected at least 1", file=sys.stderr)
            return 2
        if args.index is not None and not 0 <= args.index < len(grid.runs):
            print(f"error: --index {args.index}: the grid has runs 0..{len(grid.runs) - 1}", file=sys.stderr)
            return 2
        try:
            run_grid(grid, jobs=args.jobs, index=args.index, announce=lambda line: print(line, flush=True))
        except RuntimeError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        if args.index is not None:
            return 0
    print(f"report: {write_report(grid)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
