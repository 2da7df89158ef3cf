"""Prompt templates: turn a sample's ``problem`` into the user turn a model sees.

Templates are Jinja files, found by name in the package's ``vlmrl/templates/`` (``answer``,
``math``, ``look``) or given as a path, as EasyR1 does with ``format_prompt``. A template sees
``content`` (the problem, ``<image>`` placeholders included), ``task`` and ``answer_type`` —
never the answer, so no template can leak it. ``build_messages`` then splits the rendered text
at the placeholders, putting each image (and each ``<video>``'s video) exactly where its
placeholder was.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from vlmrl.data.sample import IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER, Sample

#: The template the tiny offline model is trained with.
DEFAULT_TEMPLATE = "answer"


def list_templates() -> list[str]:
    """Names of the templates shipped in ``vlmrl/templates/``."""
    folder = resources.files("vlmrl") / "templates"
    return sorted(p.name.removesuffix(".jinja") for p in folder.iterdir() if p.name.endswith(".jinja"))


def load_template(name_or_path: str) -> jinja2.Template:
    """A shipped template by name (``"math"``), or a ``.jinja`` file by path (re-read each call,
    so an edited file takes effect; compiled templates are cached by their source text).

    Raises ``ValueError`` naming the template and listing the shipped ones when neither exists.
    """
    path = Path(name_or_path).expanduser()
    if name_or_path in list_templates():  # a shipped name wins over a stray file of that name
        source = (resources.files("vlmrl") / "templates" / f"{name_or_path}.jinja").read_text(
            encoding="utf-8"
        )
    elif path.is_file():
        source = path.read_text(encoding="utf-8")
    else:
        raise ValueError(
            f"unknown prompt template {name_or_path!r}: not a file, and not one of the shipped "
            f"templates {list_templates()}"
        )
    try:
        return _compile(source)
    except jinja2.TemplateSyntaxError as e:
        raise ValueError(f"prompt template {name_or_path!r}: line {e.lineno}: {e.message}") from e


@lru_cache(maxsize=32)
def _compile(source: str) -> jinja2.Template:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # plain text, not HTML
    return env.from_string(source)


def render_prompt(sample: Sample, template: str = DEFAULT_TEMPLATE) -> str:
    """The user text for ``sample`` with ``<image>`` placeholders still in it."""
    try:
        text = load_template(template).render(
            content=sample.problem, task=sample.task, answer_type=sample.answer_type
        )
    except jinja2.UndefinedError as e:
        raise ValueError(
            f"prompt template {template!r}: {e.message}; templates see only content, task, answer_type"
        ) from e
    for mark, media, what in (
        (IMAGE_PLACEHOLDER, sample.images, "image"),
        (VIDEO_PLACEHOLDER, sample.videos, "video"),
    ):
        n = text.count(mark)
        if n != len(media):
            raise ValueError(
                f"sample {sample.id!r}: template {template!r} produced {n} {mark!r} placeholder(s) "
                f"for {len(media)} {what}(s)"
            )
    return text.strip()


def build_messages(
    sample: Sample, template: str = DEFAULT_TEMPLATE, embed_images: bool = False
) -> list[dict[str, Any]]:
    """One user turn in the HF chat format, images placed where the placeholders were.

    Example: problem ``"<image>How many?"`` gives
    ``[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many? ..."}]}]``.
    A ``<video>`` placeholder becomes ``{"type": "video"}`` the same way. ``embed_images=True``
    adds ``"image": PIL.Image`` (``"video": [frames]``) to each entry, which some processors'
    ``apply_chat_template`` read directly; by default images and videos travel separately, in order.
    """
    pieces = re.split(
        f"({re.escape(IMAGE_PLACEHOLDER)}|{re.escape(VIDEO_PLACEHOLDER)})", render_prompt(sample, template)
    )
    content: list[dict[str, Any]] = []
    media = {IMAGE_PLACEHOLDER: iter(sample.images), VIDEO_PLACEHOLDER: iter(sample.videos)}
    for piece in pieces:
        if piece in media:
            kind = "image" if piece == IMAGE_PLACEHOLDER else "video"
            entry: dict[str, Any] = {"type": kind}
            item = next(media[piece])
            if embed_images:
                entry[kind] = item if kind == "image" else item.frames
            content.append(entry)
        elif piece.strip():  # text kept verbatim (as EasyR1 does); whitespace-only gaps dropped
            content.append({"type": "text", "text": piece})
    return [{"role": "user", "content": content}]
