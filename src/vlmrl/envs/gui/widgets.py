"""The GUI world's widgets: each one a small state machine with a box on the screen.

A widget's ``box`` is ``(x1, y1, x2, y2)`` in screen pixels, ``x2``/``y2`` exclusive (PIL's crop
convention, as the image tools use). ``click(x, y)`` is the widget's own state transition and
returns an :class:`Event` for its app to act on (or ``None`` when nothing happened); the app
decides what an event means (a pressed "Delete all" button clears a list). Nothing here draws:
:mod:`vlmrl.envs.gui.render` does.

Transitions (each tested in ``tests/test_gui.py``):

* ``Button``: click → ``press`` (no state of its own);
* ``Toggle``: click flips ``on`` → ``toggle``; ``Checkbox``: click flips ``checked`` → ``check``;
* ``TextField``: click → ``focus``; ``type_text`` appends printable characters up to
  ``max_len``; ``backspace`` drops the last one; ``clear`` empties it;
* ``ListView``: ``rows`` of ``items`` are visible from ``offset``; ``scroll("down"/"up")`` moves
  by one row within ``[0, len(items) − rows]``; a click on a visible row → ``select``;
* ``Menu``: a click on its header opens/closes it → ``menu_open`` / ``menu_close``; while open,
  a click on an item → ``menu`` (item name) and it closes;
* ``Dialog``: a modal box with a title, a message, fields and buttons; only they can be clicked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 (x2, y2 exclusive)

#: Characters ``type`` accepts (printable ASCII); others are dropped and reported.
PRINTABLE = frozenset(chr(c) for c in range(32, 127))


def inside(box: Box, x: float, y: float) -> bool:
    """Whether the point lies in ``box`` (``x2``/``y2`` exclusive).

    >>> inside((10, 10, 20, 20), 10, 19.5), inside((10, 10, 20, 20), 20, 15)
    (True, False)
    """
    return box[0] <= x < box[2] and box[1] <= y < box[3]


def center(box: Box) -> tuple[int, int]:
    """The integer centre of ``box`` (where an expert clicks)."""
    return (box[0] + box[2]) // 2, (box[1] + box[3]) // 2


@dataclass
class Event:
    """What a click did: ``kind`` (``press``, ``toggle``, ``check``, ``focus``, ``select``,
    ``menu_open``, ``menu_close``, ``menu``), the widget's id, and a value (new state, item)."""

    kind: str
    wid: str
    value: Any = None


@dataclass
class Widget:
    """Base widget: an id (stable across renders), a visible label and a box."""

    wid: str
    label: str
    box: Box

    kind = "widget"

    def click(self, x: float, y: float) -> Event | None:
        return None

    def facts(self) -> dict[str, Any]:
        """Ground truth of this widget (plain JSON types)."""
        return {"id": self.wid, "kind": self.kind, "label": self.label, "box": list(self.box)}


@dataclass
class Button(Widget):
    danger: bool = False  # drawn filled red with white text (destructive), as real GUIs warn

    kind = "button"

    def click(self, x: float, y: float) -> Event | None:
        return Event("press", self.wid)


@dataclass
class Toggle(Widget):
    on: bool = False

    kind = "toggle"

    def click(self, x: float, y: float) -> Event | None:
        self.on = not self.on
        return Event("toggle", self.wid, self.on)

    def facts(self) -> dict[str, Any]:
        return super().facts() | {"on": self.on}


@dataclass
class Checkbox(Widget):
    checked: bool = False

    kind = "checkbox"

    def click(self, x: float, y: float) -> Event | None:
        self.checked = not self.checked
        return Event("check", self.wid, self.checked)

    def facts(self) -> dict[str, Any]:
        return super().facts() | {"checked": self.checked}


@dataclass
class TextField(Widget):
    text: str = ""
    focused: bool = False
    max_len: int = 16

    kind = "text_field"

    def click(self, x: float, y: float) -> Event | None:
        self.focused = True
        return Event("focus", self.wid)

    def type_text(self, text: str) -> tuple[int, int]:
        """Append ``text``'s printable characters while there is room; ``(typed, dropped)``."""
        kept = [c for c in text if c in PRINTABLE]
        room = max(0, self.max_len - len(self.text))
        self.text += "".join(kept[:room])
        return min(len(kept), room), len(text) - min(len(kept), room)

    def backspace(self) -> bool:
        if not self.text:
            return False
        self.text = self.text[:-1]
        return True

    def clear(self) -> None:
        self.text = ""

    def facts(self) -> dict[str, Any]:
        return super().facts() | {"text": self.text, "focused": self.focused}


@dataclass
class ListView(Widget):
    items: list[str] = field(default_factory=list)
    rows: int = 4
    offset: int = 0
    selected: str | None = None

    kind = "list"

    @property
    def row_height(self) -> int:
        return (self.box[3] - self.box[1]) // self.rows

    def visible(self) -> list[str]:
        return self.items[self.offset : self.offset + self.rows]

    def row_box(self, i: int) -> Box:
        """The box of visible row ``i`` (0 = top), leaving the scroll bar's strip free."""
        x1, y1, x2, _ = self.box
        h = self.row_height
        return (x1, y1 + i * h, x2 - 8, y1 + (i + 1) * h)

    def item_box(self, item: str) -> Box | None:
        """The box of ``item`` if it is on screen now, else ``None``."""
        vis = self.visible()
        return self.row_box(vis.index(item)) if item in vis else None

    def max_offset(self) -> int:
        return max(0, len(self.items) - self.rows)

    def scroll(self, direction: str) -> bool:
        """Move one row ``up`` or ``down``; ``False`` at the end (nothing moved)."""
        new = self.offset + (1 if direction == "down" else -1)
        new = min(max(new, 0), self.max_offset())
        moved = new != self.offset
        self.offset = new
        return moved

    def remove(self, item: str) -> None:
        self.items.remove(item)
        if self.selected == item:
            self.selected = None
        self.offset = min(self.offset, self.max_offset())

    def click(self, x: float, y: float) -> Event | None:
        for i, item in enumerate(self.visible()):
            if inside(self.row_box(i), x, y):
                self.selected = item
                return Event("select", self.wid, item)
        return None

    def facts(self) -> dict[str, Any]:
        return super().facts() | {
            "items": list(self.items),
            "offset": self.offset,
            "rows": self.rows,
            "selected": self.selected,
        }


@dataclass
class Menu(Widget):
    items: list[str] = field(default_factory=list)
    open: bool = False
    item_height: int = 18
    item_width: int = 90

    kind = "menu"

    def item_box(self, i: int) -> Box:
        x1, _, _, y2 = self.box
        return (x1, y2 + i * self.item_height, x1 + self.item_width, y2 + (i + 1) * self.item_height)

    def click(self, x: float, y: float) -> Event | None:
        if inside(self.box, x, y):
            self.open = not self.open
            return Event("menu_open" if self.open else "menu_close", self.wid)
        if self.open:
            for i, item in enumerate(self.items):
                if inside(self.item_box(i), x, y):
                    self.open = False
                    return Event("menu", self.wid, item)
        return None

    def hit(self, x: float, y: float) -> bool:
        """Whether a click lands on the header or, when open, on an item."""
        return inside(self.box, x, y) or (
            self.open and any(inside(self.item_box(i), x, y) for i in range(len(self.items)))
        )

    def facts(self) -> dict[str, Any]:
        boxes = [list(self.item_box(i)) for i in range(len(self.items))] if self.open else []
        return super().facts() | {"items": list(self.items), "open": self.open, "item_boxes": boxes}


@dataclass
class Dialog:
    """A modal dialog: while it is open, only its own widgets respond to clicks.

    ``default`` is the button ``key("enter")`` presses and ``cancel`` the one ``key("escape")``
    presses; a destructive dialog's default is its safe button, as in real GUIs.
    """

    did: str
    title: str
    message: str
    box: Box
    widgets: list[Widget] = field(default_factory=list)
    default: str | None = None
    cancel: str | None = None

    def hit(self, x: float, y: float) -> Widget | None:
        for w in self.widgets:
            if inside(w.box, x, y):
                return w
        return None

    def facts(self) -> dict[str, Any]:
        return {
            "id": self.did,
            "kind": "dialog",
            "title": self.title,
            "message": self.message,
            "box": list(self.box),
            "widgets": [w.facts() for w in self.widgets],
        }
