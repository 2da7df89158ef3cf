"""MkDocs hook: fill the generated reference pages from the code, so they cannot drift from it.

``<!-- config-reference -->`` becomes every config key (``vlmrl.config.reference``),
``<!-- cli-reference -->`` the ``--help`` of every command, ``<!-- easyr1-table -->`` the EasyR1
translation table (``vlmrl.config.easyr1.TABLE``), ``<!-- challenges-results -->`` the summary of
``bench/results/challenges.json`` (``vlmrl.experiments.verdict.summary_table``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _cli_reference() -> str:
    from vlmrl.cli.main import build_parser

    parser = build_parser()
    out = ["```text", parser.format_help().rstrip(), "```", ""]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += [f"## `vlmrl {name}`", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(out)


def _easyr1_table() -> str:
    from vlmrl.config.easyr1 import TABLE

    lines = ["| EasyR1 key | vlmrl key | note |", "|---|---|---|"]
    for key, rule in TABLE.items():
        shown = f"`{key}*`" if key.endswith(".") else f"`{key}`"
        target = f"`{rule.target}`" if rule.target else "—"
        lines.append(f"| {shown} | {target} | {rule.note.replace('|', chr(92) + '|')} |")
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if "<!-- config-reference -->" in markdown:
        from vlmrl.config.reference import config_reference

        markdown = markdown.replace("<!-- config-reference -->", config_reference())
    if "<!-- cli-reference -->" in markdown:
        markdown = markdown.replace("<!-- cli-reference -->", _cli_reference())
    if "<!-- easyr1-table -->" in markdown:
        markdown = markdown.replace("<!-- easyr1-table -->", _easyr1_table())
    if "<!-- challenges-results -->" in markdown:
        from vlmrl.experiments.verdict import summary_table

        results = Path(config["config_file_path"]).parent / "bench" / "results" / "challenges.json"
        markdown = markdown.replace(
            "<!-- challenges-results -->", summary_table(json.loads(results.read_text()))
        )
    return markdown
