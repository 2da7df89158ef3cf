"""Helpers the bench scripts share."""

from __future__ import annotations

import argparse


def command_line(script: str, args: argparse.Namespace) -> str:
    """The command that reproduces a run: ``python bench/<script> --flag value …`` from parsed args
    (list values joined by spaces; a boolean is its bare flag when true, absent when false), written
    into each results file."""

    def flag(k: str, v) -> str:
        name = f"--{k.replace('_', '-')}"
        if isinstance(v, bool):
            return name if v else ""
        return f"{name} {' '.join(map(str, v)) if isinstance(v, list) else v}"

    flags = " ".join(f for f in (flag(k, v) for k, v in vars(args).items()) if f)
    return f"python bench/{script} {flags}"
