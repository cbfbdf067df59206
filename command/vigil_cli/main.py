"""`vigil`'s entry point: one parser, one dispatch. Each subcommand names the
function that runs it by module and attribute, imported when it runs, so
`vigil detect` starts without torch and `vigil operator` without the model
code. Exit codes: 0 success, 2 usage, 1 anything else (message on stderr)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

Command = Callable[[argparse.Namespace], int]


def lazy(module: str, func: str) -> Command:
    """A command whose module is imported only when it runs."""

    def run(args: argparse.Namespace) -> int:
        fn: Command = getattr(importlib.import_module(module), func)
        return fn(args)

    return run


def build_parser() -> argparse.ArgumentParser:
    from vigil_cli.local import add_local_commands
    from vigil_cli.operator import add_operator_command
    from vigil_cli.unit import add_unit_commands

    parser = argparse.ArgumentParser(prog="vigil", description="The `vigil` command")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_unit_commands(sub)
    add_operator_command(sub)
    add_local_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line for users; VIGIL_DEBUG=1 for the traceback
        if os.environ.get("VIGIL_DEBUG"):
            raise
        print(f"vigil {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
