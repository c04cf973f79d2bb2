"""The `rim-bench` command line.

    rim-bench test       [experiment=NAME] [dotted.key=value ...]   evaluate and write results
    rim-bench check-data [experiment=NAME] [dotted.key=value ...]   read every sample, report problems
    rim-bench build-bank [experiment=NAME] [dotted.key=value ...]   build or reuse the reference bank
    rim-bench sweep      [experiment=NAME] sweep=NAME [key=value ...]  run a grid of configs, plot mIoU
    rim-bench sweep      [experiment=NAME] key=a,b,c [key=value ...]   the same, the grid on the command line
    rim-bench compare    [experiment=NAME] [protocol=NAME] methods=[a,b] [key=value ...]  several methods, one table
    rim-bench suite NAME [key=value ...]                             benchmarks x methods, published beside
    rim-bench config     [experiment=NAME] [dotted.key=value ...]   print the resolved config
    rim-bench plan       [experiment=NAME] [dotted.key=value ...]   checks, cached work and projected cost of a run
    rim-bench segment IMAGE... --classes a,b experiment=NAME [--out DIR] [key=value ...]  your images
    rim-bench report RUN_DIR... [--out DIR]                          result folders → report.md, report.html
    rim-bench convert BENCHMARK --src RAW --dst ROOT                 make labels in the expected layout

protocol=NAME (sclip, freeda: configs/protocol/) evaluates under a peer's protocol, with any command.
--quiet (test, sweep, compare, suite) prints one line per run and the final table: no per-class or
time tables, progress bars or W&B messages (warnings and errors still show).
Bad input (config, data, weights) ends with one line on stderr and exit code 2; a suite
where some cells failed (each reported in its table) ends with exit code 1; SIGTERM and
SIGINT end any command within seconds, in one line, with exit code 143 and 130.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from rim_bench.core import clock  # noqa: F401  first of rim-bench: the process's start where /proc cannot say
from rim_bench.core.config_index import help_listing
from rim_bench.core.errors import RimBenchError, disk_error_line, error_line
from rim_bench.core.logs import console_logging, plain_warnings, quiet_console

EXIT_USER_ERROR = 2
EXIT_CELLS_FAILED = 1
# What each command's --help lists besides the config keys.
LISTINGS = {"sweep": ("experiment", "sweep"), "compare": ("experiment", "method")}
QUIET_COMMANDS = ("test", "sweep", "compare", "suite")
QUIET_HELP = ("one line per run (each sweep point, method or cell: its scores and folder) and the final table; "
              "no per-class or time tables, progress bars or W&B messages")
CONFIG_COMMANDS = {
    "test": "evaluate a config on its benchmark; writes metrics.json and config.yaml to output_dir",
    "check-data": "read every image and label of the configured data set and report each problem",
    "build-bank": "build (or find in the cache) the reference bank for the benchmark's vocabulary",
    "sweep": "run the experiment over a grid of config values (sweep=NAME or a YAML path, see configs/sweep/; "
             "and/or key=a,b,c on the command line: a value holding a comma in [brackets] or quotes)",
    "compare": "run several methods (methods=[rim,cosine,...], configs/method/) on one benchmark, one table",
    "config": "print the resolved config and its result hash",
    "plan": "check the weights, count what is cached, run one image and one reference, project the run's cost",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rim-bench",
        description="Training-free open-vocabulary segmentation benchmarks, built around RIM.",
        epilog="Configs merge configs/default.yaml, then configs/experiment/NAME.yaml, then key=value overrides.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in CONFIG_COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text, epilog=help_listing(
            *LISTINGS.get(name, ("experiment", "method"))), formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("overrides", nargs="*", metavar="key=value", help="experiment=NAME and config overrides")
        if name in QUIET_COMMANDS:
            sub.add_argument("-q", "--quiet", action="store_true", help=QUIET_HELP)
    segment = commands.add_parser("segment", help="segment your images with your class names (overlay + label PNGs)",
                                  epilog=help_listing("experiment", "method"),
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    segment.add_argument("inputs", nargs="+", metavar="IMAGE|key=value",
                         help="image files, folders or glob patterns, then experiment=NAME and config overrides")
    segment.add_argument("--classes", required=True, help="comma-separated class names, e.g. cat,dog,sofa")
    segment.add_argument("--out", type=Path, default=Path("segmented"), help="output folder (default: segmented)")
    suite_help = ("run a suite (configs/suite/NAME.yaml): benchmarks x methods, one table with the published "
                  "numbers beside; resumes in the same folder")
    suite = commands.add_parser("suite", help=suite_help, description=suite_help, epilog=help_listing("suite"),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    suite.add_argument("suite", metavar="NAME", help="a suite in configs/suite/ (listed below) or a YAML path")
    suite.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every cell")
    suite.add_argument("-q", "--quiet", action="store_true", help=QUIET_HELP)
    report = commands.add_parser("report", help="result folders (runs, sweeps, comparisons, suites) → report.md, .html")
    report.add_argument("folders", nargs="+", type=Path, help="folders written by test, sweep, compare or suite")
    report.add_argument("--out", type=Path, default=Path("report"),
                        help="where report.md and report.html go: a new, empty or earlier report's folder "
                             "(default: report)")
    convert = commands.add_parser("convert", help="convert a downloaded benchmark's labels (see datasets/README.md)")
    convert.add_argument("benchmark", help="context | coco_object | coco_stuff171 | cityscapes")
    convert.add_argument("--src", required=True, help="the downloaded, extracted raw annotations")
    convert.add_argument("--dst", required=True, help="data.root: where the benchmark's folder is written")
    convert.add_argument("--split", default="val", help="the split to convert (default: val)")
    convert.add_argument(
        "--unlabeled", choices=("background", "ignore"), default=None,
        help="coco_object only: score unlabeled pixels as background (default, as peers do) or ignore them",
    )
    return parser


class Interrupted(BaseException):
    """SIGTERM or SIGINT, raised where the main thread is. Not a KeyboardInterrupt, which
    Lightning's Trainer turns into exit(1); not an Exception, which stages may catch. Files
    being written are cleaned up on the way out (`rim_bench.core.io.atomic_path`)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop_on_signals() -> Callable[[], None]:
    """Make SIGTERM stop a command as SIGINT does; returns what restores the previous handlers.
    Lightning's own SIGTERM handler only sets a flag (`timeout` could not stop a run); it
    calls the handler that was set before it, this one."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        return lambda: None
    main_pid = os.getpid()

    def stop(signum: int, frame: object) -> None:
        if os.getpid() != main_pid:  # a forked DataLoader worker: it exits quietly on Ctrl-C
            raise KeyboardInterrupt
        raise Interrupted(signum)

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return restore


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if hasattr(args, "overrides"):  # overrides may come on both sides of --quiet
        args.overrides += [e for e in extra if not e.startswith("-")]
        extra = [e for e in extra if e.startswith("-")]
    if extra and args.command != "segment":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:  # segment's images and overrides may come on both sides of --classes
        args.inputs += extra
    console_logging()  # the library's lines (results tables, bank progress) on stdout / stderr
    plain_warnings()
    restore_signals = _stop_on_signals()
    try:
        with quiet_console() if getattr(args, "quiet", False) else nullcontext():
            return _run(args)
    except RimBenchError as e:
        print(f"rim-bench: error: {error_line(e)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Interrupted as e:
        print(f"rim-bench: interrupted by {e}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("rim-bench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `rim-bench config | head -1`: the reader has what it wanted
        _silence_stdout()
        return 128 + signal.SIGPIPE
    except OSError as e:  # a full or read-only disk under a cache or result file
        line = disk_error_line(e)
        if line is None:
            raise
        print(f"rim-bench: error: {line}", file=sys.stderr)
        return EXIT_USER_ERROR
    finally:
        restore_signals()


def _silence_stdout() -> None:
    """Point stdout at /dev/null: what is left in its buffer would fail again at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _run(args: argparse.Namespace) -> int:
    """The command `args` names; its output flushed, so that a closed pipe shows here."""
    try:
        return _command(args)
    finally:
        sys.stdout.flush()


def _command(args: argparse.Namespace) -> int:
    if args.command == "convert":
        return _convert(args)
    if args.command == "segment":
        from rim_bench.commands.segment_images import segment_images

        images, overrides = _split_inputs(args.inputs)
        segment_images(images, args.classes, args.out, overrides)
        return 0
    if args.command == "report":
        from rim_bench.commands.report import build_report

        md, page = build_report(args.folders, args.out)
        print(f"report: {md}, {page}")
        return 0
    from rim_bench.core.config import config_hash, load_config, resolve
    from rim_bench.run.methods import result_spec

    if args.command == "sweep":
        return _sweep(args.overrides)
    if args.command == "suite":
        return _suite(args.suite, args.overrides)
    if args.command == "compare":
        from rim_bench.commands.compare import run_compare

        run_compare(args.overrides)
        return 0
    cfg = load_config(args.overrides)
    if args.command == "config":
        from omegaconf import OmegaConf

        cfg = resolve(cfg)
        print(OmegaConf.to_yaml(cfg), end="")
        print(f"# result hash: {config_hash(result_spec(cfg))}")
    elif args.command == "check-data":
        from rim_bench.run.datasets import check_data

        check_data(cfg)
    elif args.command == "plan":
        from rim_bench.commands.plan import run_plan

        run_plan(cfg)
    elif args.command == "build-bank":
        from rim_bench.run.runner import build_bank

        build_bank(cfg)
    else:
        from rim_bench.run.runner import run_test

        run_test(cfg)
    return 0


def _split_inputs(inputs: list[str]) -> tuple[list[str], list[str]]:
    """`segment`'s arguments: ``key=value`` items that are not existing paths are overrides."""
    overrides = [i for i in inputs if "=" in i and not Path(i).exists()]
    return [i for i in inputs if i not in overrides], overrides


def _sweep(overrides: list[str]) -> int:
    from rim_bench.commands.sweep import run_sweep, sweep_from_command_line

    run_sweep(*sweep_from_command_line(overrides))
    return 0


def _suite(name: str, overrides: list[str]) -> int:
    from rim_bench.commands.suite import failure_summary, load_suite, run_suite

    failed = failure_summary(run_suite(load_suite(name), overrides))
    if failed:
        print(f"rim-bench: error: {failed} (reasons in the table above)", file=sys.stderr)
        return EXIT_CELLS_FAILED
    return 0


def _convert(args: argparse.Namespace) -> int:
    from rim_bench.core.errors import ConfigError
    from rim_bench.data.converters import CONVERTERS

    if args.benchmark not in CONVERTERS:
        raise ConfigError(f"no converter for '{args.benchmark}' (known: {', '.join(sorted(CONVERTERS))})")
    options = {"unlabeled": args.unlabeled} if args.unlabeled else {}
    if options and args.benchmark != "coco_object":
        raise ConfigError("--unlabeled applies to coco_object only")
    report = CONVERTERS[args.benchmark](Path(args.src), Path(args.dst), split=args.split, **options)
    print(f"{args.benchmark}: wrote {report.written}, kept {report.skipped} already converted, "
          f"of {report.total} → {report.out_dir}")
    return 0



if __name__ == "__main__":
    sys.exit(main())
