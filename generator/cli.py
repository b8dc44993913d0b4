"""The ``handbook`` command (also ``python -m generator``).

Subcommands: ``run`` (measure), ``build`` (measure, then the site and both
PDFs), ``serve`` (the site with live reload), ``estimate`` (training memory of
a model, no torch needed), ``gpu-plan`` (the GPU reference run in a time
budget, results in one archive). ``run`` and ``gpu-plan`` need only the
standard library and the experiments' torch; the others import the site
dependencies when called.
"""
from __future__ import annotations

import argparse
import math
import os
import signal
import sys
from pathlib import Path

from generator import gpu_plan, runner
from generator.argv import attach_negative_values
from generator.errors import HandbookError, InputError, one_line


def positive_seconds(text: str) -> float:
    """A positive, finite number of seconds (0, negatives, nan and inf are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive, finite number of seconds, not {text!r}")
    return value


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", type=Path, default=runner.DEFAULT_RESULTS,
                   help="results folder (default: %(default)s)")
    p.add_argument("--only", action="append", metavar="NAME",
                   help="run only this experiment (repeatable, or comma-separated)")
    p.add_argument("--force", action="store_true", help="rerun even when the cached result is current")
    p.add_argument("--profile", choices=("quick", "full", "gpu"),
                   help="experiment size (default: full when CUDA is present, else quick; gpu: the GPU plan's)")
    p.add_argument("--device", help="torch device to measure on (default: cuda when available, else cpu)")
    p.add_argument("--timeout", type=positive_seconds, metavar="SECONDS",
                   help="per-experiment time limit (default: each experiment's TIMEOUT_S, else 600)")
    p.add_argument("--plain", action="store_true", help="plain progress lines even on a terminal")
    p.add_argument("--root", type=Path, default=runner.REPO,
                   help="folder holding the experiments package (default: this repository)")


def _add_site_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--primary-host", metavar="SLUG",
                   help="the results host whose numbers the prose uses (a folder name under results/; "
                        "default: this machine's, when present)")
    p.add_argument("--site-dir", type=Path, default=Path("site"), help="output folder (default: %(default)s)")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="handbook",
        description="The Training Memory Handbook: measure on this machine, then build the site and PDFs.",
        epilog="Typical use: 'handbook build' (everything), 'handbook run --only optimizer_state --force', "
               "'handbook serve', 'handbook estimate --model llama-2-7b --optimizer adamw'.",
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the experiments for this host (cached)",
                       description="Run every experiment in its own subprocess and write "
                                   "results/<host>/<name>.json. Unchanged inputs are skipped.")
    _add_run_options(p)

    p = sub.add_parser("build", help="run (cached), then build the site, the handbook PDF and the cheat sheet",
                       description="Run the experiments (cached), build the site with mkdocs, and print "
                                   "handbook.pdf and cheatsheet.pdf with Chromium.")
    _add_run_options(p)
    _add_site_options(p)
    p.add_argument("--no-run", action="store_true", help="build from the results on disk without running")
    p.add_argument("--no-pdf", action="store_true", help="skip the two PDFs")

    p = sub.add_parser("serve", help="serve the site with live reload (rebuilds when results change)",
                       description="Serve the site on localhost; pages rebuild when docs or results change.")
    p.add_argument("--primary-host", metavar="SLUG", help="the results host whose numbers the prose uses")
    p.add_argument("--results", type=Path, default=runner.DEFAULT_RESULTS, help="results folder")
    p.add_argument("--addr", default="127.0.0.1:8000", metavar="IP:PORT",
                   help="network address to serve on (default: %(default)s)")

    p = sub.add_parser("gpu-plan", help="the GPU reference run: every experiment in a time budget, one archive back",
                       description="Run every experiment in the gpu profile, most needed first, within a time "
                                   "budget; skip what would overrun; after each, rewrite OUT/results.tgz "
                                   "(results/<host>/ and the log); then, if time is left, the CUDA-only tests.")
    p.add_argument("--out", type=Path, default=os.environ.get("OUT") or None,
                   help="folder for results.tgz and the log (default: the OUT environment variable)")
    p.add_argument("--budget", type=positive_seconds, default=gpu_plan.GLOBAL_BUDGET_S, metavar="SECONDS",
                   help="run time for the whole plan, the describe step included (default: %(default)g)")
    p.add_argument("--profile", choices=("gpu", "quick", "test", "full"), default=gpu_plan.PROFILE,
                   help="experiment size (default: %(default)s; quick rehearses on a CPU)")
    p.add_argument("--predict-from", type=Path, metavar="RESULTS",
                   help="predict each experiment's time from this host's earlier result in that results "
                        "folder, same profile (default: the plan's table)")
    p.add_argument("--margin", type=float, default=gpu_plan.MARGIN, metavar="FACTOR",
                   help="each experiment's time limit over its predicted time (default: %(default)g)")
    p.add_argument("--no-tests", action="store_true", help="skip the CUDA-only tests")
    p.add_argument("--dry-run", action="store_true", help="print the plan's table and budgets, run nothing")
    p.add_argument("--force", action="store_true", help="rerun even when the cached result is current")
    p.add_argument("--device", help="torch device (default: cuda when available)")
    p.add_argument("--results", type=Path, default=runner.DEFAULT_RESULTS,
                   help="results folder (default: %(default)s)")
    p.add_argument("--root", type=Path, default=runner.REPO,
                   help="folder holding the experiments package (default: this repository)")

    p = sub.add_parser("estimate", help="estimate the training memory of a model (no torch needed)",
                       add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)
    return top


def cmd_run(args: argparse.Namespace) -> int:
    only = [n for item in (args.only or []) for n in item.split(",") if n]
    outcomes = runner.run(results_dir=args.results, only=only or None, force=args.force, profile=args.profile,
                          device=args.device, timeout_s=args.timeout, plain=args.plain,
                          root=args.root)
    failed = [o for o in outcomes if o.state == "failed"]
    for o in failed:
        print(f"\n{o.name} failed (recorded in {o.path}):\n{o.error}", file=sys.stderr)
    return 1 if failed else 0


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        return cmd_run(args)
    if args.command == "build":
        from generator.build import build, check_site_dir

        check_site_dir(args.site_dir.resolve())  # before measuring anything
        status = 0 if args.no_run else cmd_run(args)
        build(results_dir=args.results, host=args.primary_host, site_dir=args.site_dir, pdf_too=not args.no_pdf)
        return status
    if args.command == "gpu-plan":
        return gpu_plan.main(args.out, dry_run=args.dry_run, budget_s=args.budget, profile=args.profile,
                             results_dir=args.results, root=args.root, device=args.device,
                             predict_from=args.predict_from, tests=not args.no_tests, force=args.force,
                             margin=args.margin)
    if args.command == "serve":
        from generator.build import serve

        serve(results_dir=args.results, host=args.primary_host, addr=args.addr)
        return 0
    raise InputError(f"unknown command {args.command!r}")


def _terminate(signum, frame) -> None:
    """SIGTERM ends a run as Ctrl-C does: children stopped, nothing half-written, one line."""
    raise KeyboardInterrupt


def _one_line(exc: BaseException) -> str:
    """mkdocs wraps the hook's HandbookError in its own exceptions; show the innermost message."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        inner = exc.__cause__ or exc.__context__
        if isinstance(inner, HandbookError):
            return str(inner)
        exc = inner
    return str(exc)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["estimate"]:
        from generator.estimate import main as estimate_main

        return estimate_main(argv[1:])
    top = parser()
    args = top.parse_args(attach_negative_values(top, argv))
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return dispatch(args)
    except (KeyboardInterrupt, runner.Interrupted) as exc:
        detail = str(exc) if isinstance(exc, runner.Interrupted) else "interrupted"
        print(f"handbook: {args.command}: {detail}; the results on disk are as they were", file=sys.stderr)
        return 130
    except HandbookError as exc:  # the one handler: one line, non-zero exit
        print(f"handbook: {args.command}: {one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # mkdocs' and Chromium's failures, which carry ours inside them
        if type(exc).__name__ in ("Abort", "BuildError", "PluginError", "ConfigurationError"):
            print(f"handbook: {args.command} failed: {_one_line(exc)}", file=sys.stderr)
            return 1
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
