"""The `rim-bench` command line.

    rim-bench test   [experiment=NAME] [dotted.key=value ...]   evaluate and write results
    rim-bench config [experiment=NAME] [dotted.key=value ...]   print the resolved config

Bad input (config, data, weights) ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from rim_bench.errors import RimBenchError

EXIT_USER_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rim-bench",
        description="Training-free open-vocabulary segmentation benchmarks, built around RIM.",
        epilog="Configs merge configs/default.yaml, then configs/experiment/NAME.yaml, then key=value overrides.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("test", "evaluate a config on its benchmark; writes metrics.json and config.yaml to output_dir"),
        ("config", "print the resolved config and its result hash"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("overrides", nargs="*", metavar="key=value", help="experiment=NAME and config overrides")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        from rim_bench.config import config_hash, load_config, resolve, result_spec

        cfg = load_config(args.overrides)
        if args.command == "config":
            from omegaconf import OmegaConf

            cfg = resolve(cfg)
            print(OmegaConf.to_yaml(cfg), end="")
            print(f"# result hash: {config_hash(result_spec(cfg))}")
        else:
            from rim_bench.runner import run_test

            run_test(cfg)
    except RimBenchError as e:
        print(f"rim-bench: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("rim-bench: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
