"""A command line for any flow, built from its signature and docstring, so --help lists every parameter."""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
import typing


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


def build_parser(flow) -> argparse.ArgumentParser:
    fn = flow.fn
    doc = inspect.getdoc(fn) or ""
    spec = fn.__globals__.get("__spec__")
    module = spec.name if spec else fn.__module__
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    helps = _param_help(doc)
    hints = typing.get_type_hints(fn)
    for name, param in inspect.signature(fn).parameters.items():
        kind = hints.get(name, str)
        args = typing.get_args(kind)
        base = next((a for a in args if a is not type(None)), kind) if args else kind
        converter = _boolean if base is bool else base
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=converter, default=param.default,
                            metavar=base.__name__.upper(), help=helps.get(name, " ").replace("%", "%%"))
    return parser


def run_flow_cli(flow, argv: list[str] | None = None) -> object:
    """Parse argv into the flow's parameters, run it once (ephemeral Prefect), print its result as JSON."""
    options = vars(build_parser(flow).parse_args(argv))
    try:
        result = flow(**options)
    except Exception as error:  # a user-facing failure: one clear line, non-zero exit
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    print(json.dumps(result, indent=2, default=str))
    return result
