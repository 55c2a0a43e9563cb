"""A command line for any flow, built from its signature and docstring, so --help lists every parameter.

Quiet by default: a run that fails prints one `error:` line (storage.errors.UserError says what to
do) and no traceback, except for a bug; Prefect's run logs keep the traceback either way. `--verbose`
(or FASHION_SIM_VERBOSE=1, e.g. in a deployment's environment) shows the tracebacks and what native
libraries print.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import re
import sys
import traceback
import typing

from storage.errors import UserError
from storage.runtime import add_verbose_flag, parse_command_line, verbose


def _param_help(doc: str) -> dict[str, str]:
    helps, current = {}, None
    for line in (doc or "").splitlines():
        match = re.match(r"^ {4}(\w+):\s*(.*)$", line)
        if match:
            current = match.group(1)
            helps[current] = match.group(2)
        elif current and line.startswith(" " * 8) and line.strip():
            helps[current] += " " + line.strip()
        elif not line.strip():
            current = None
    return helps


def _boolean(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class _DefaultsOnce(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: ...)" only where the docstring did not already say what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if "(default" in (action.help or "") or action.default in ("", None):
            return action.help or ""
        return super()._get_help_string(action)


def build_parser(flow, positional: tuple[str, ...] = (), flags: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """Every parameter an option (--name VALUE), but those named in `positional` (a list: any number of
    values; else one, optional) and the booleans named in `flags` (--name alone means true); a list
    parameter's option takes one or more values and may repeat."""
    fn = flow.fn
    doc = inspect.getdoc(fn) or ""
    spec = fn.__globals__.get("__spec__")
    module = spec.name if spec else fn.__module__
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n\n")[0],
                                     formatter_class=_DefaultsOnce)
    helps = _param_help(doc)
    hints = typing.get_type_hints(fn)
    for name, param in inspect.signature(fn).parameters.items():
        kind = hints.get(name, str)
        args = typing.get_args(kind)
        base = next((a for a in args if a is not type(None)), kind) if args else kind
        many = typing.get_origin(base) is list
        base = typing.get_args(base)[0] if many else base
        converter = _boolean if base is bool else base
        common = dict(type=converter, default=param.default, help=helps.get(name, " ").replace("%", "%%"))
        if name in flags:
            parser.add_argument(f"--{name.replace('_', '-')}", dest=name, action="store_true", help=common["help"])
        elif name in positional:
            parser.add_argument(name, nargs="*" if many else "?", metavar=name.upper(), **common)
        elif many:
            parser.add_argument(f"--{name.replace('_', '-')}", dest=name, nargs="+", action="extend",
                                metavar=base.__name__.upper(), **common)
        else:
            parser.add_argument(f"--{name.replace('_', '-')}", dest=name, metavar=base.__name__.upper(), **common)
    add_verbose_flag(parser)
    return parser


class _QuietConsole(logging.Filter):
    """Keeps off the terminal Prefect's records of a failed run (the traceback, "Finished in state
    Failed"), which the CLI prints as one line, and Prefect's own housekeeping: the temporary server
    it starts and stops for one run (with advice on running a dedicated one) and its events queue
    draining at exit. The run's logs still get the run's records."""

    HOUSEKEEPING = ("Starting temporary server", "Stopping temporary server", "Still processing items")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (record.exc_info or message.startswith("Finished in state Failed")
                    or message.startswith(self.HOUSEKEEPING))


def run_flow_cli(flow, argv: list[str] | None = None, positional: tuple[str, ...] = (),
                 flags: tuple[str, ...] = ()) -> object:
    """Parse argv into the flow's parameters (`positional` and `flags` as build_parser says), run it
    once (ephemeral Prefect), print its result as JSON."""
    options = vars(parse_command_line(build_parser(flow, positional, flags), argv))
    options.pop("verbose")
    if not verbose():
        for handler in logging.getLogger().handlers:
            if type(handler).__name__ == "PrefectConsoleHandler":
                handler.addFilter(_QuietConsole())
    try:
        result = flow(**options)
    except UserError as error:  # says what to do, in one line
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except Exception as error:  # a bug: its traceback belongs on the terminal too
        if not verbose():
            traceback.print_exception(error, file=sys.stderr)
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    print(json.dumps(result, indent=2, default=str))
    return result
