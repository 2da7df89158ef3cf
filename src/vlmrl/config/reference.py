"""The config reference, generated from the dataclasses: every key, its type, default, allowed
values and the field's own docstring. The docs site's ``reference/config.md`` is this text
(``docs/hooks.py`` writes it at build time), so the page cannot drift from the code.

Field docstrings are the string literals that follow each annotated field in the class body (the
convention of ``schema.py``); Python keeps no runtime record of them, so they are read from the
source with ``ast``.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import typing
from dataclasses import dataclass
from typing import Any

from vlmrl.config.schema import CHOICES, TrainConfig


@dataclass(frozen=True)
class KeyDoc:
    """One config key as the reference shows it."""

    key: str
    type: str
    default: Any
    doc: str
    choices: tuple[str, ...] = ()


def field_docs(cls: type) -> dict[str, str]:
    """``{field name: docstring}`` of a dataclass, from the string after each annotated field
    (inherited fields' from their own class's source)."""
    docs: dict[str, str] = {}
    for base in cls.__mro__[1:]:
        if dataclasses.is_dataclass(base):
            docs |= field_docs(base)
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # the ClassDef's statements
    for stmt, nxt in zip(body, [*body[1:], None], strict=True):
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            is_doc = isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
            if is_doc and isinstance(nxt.value.value, str):
                docs[stmt.target.id] = " ".join(inspect.cleandoc(nxt.value.value).split())
    return docs


def _type_name(tp: Any) -> str:
    text = str(tp) if not isinstance(tp, type) else tp.__name__
    return text.replace("typing.", "").replace("NoneType", "None")


def config_keys(cls: type = TrainConfig, prefix: str = "") -> list[KeyDoc]:
    """Every leaf key of the config tree under ``cls``, in declaration order (sections recurse)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    defaults = cls()
    out: list[KeyDoc] = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += config_keys(tp, f"{key}.")
            continue
        out.append(
            KeyDoc(key, _type_name(tp), getattr(defaults, f.name), docs.get(f.name, ""), CHOICES.get(key, ()))
        )
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default(value: Any) -> str:
    if isinstance(value, str) and "\n" in value:
        value = value.replace("\n", "\\n")
    return f"`{value!r}`" if isinstance(value, str) else f"`{value}`"


def config_reference() -> str:
    """The reference as Markdown: one table per section (``model``, ``data``, …)."""
    sections: dict[str, list[KeyDoc]] = {}
    for k in config_keys():
        sections.setdefault(k.key.split(".")[0], []).append(k)
    top = field_docs(TrainConfig)
    lines: list[str] = []
    for name, keys in sections.items():
        lines += [f"## `{name}`", ""]
        if top.get(name):
            lines += [top[name], ""]
        lines += ["| key | type | default | what |", "|---|---|---|---|"]
        for k in keys:
            doc = k.doc + (f" One of: {', '.join(f'`{c}`' for c in k.choices)}." if k.choices else "")
            lines.append(f"| `{k.key}` | `{_cell(k.type)}` | {_cell(_default(k.default))} | {_cell(doc)} |")
        lines.append("")
    return "\n".join(lines)
