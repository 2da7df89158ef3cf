"""``App``: one window of the GUI world — its widgets, an optional menu and modal dialog, and the
generic input handling every app shares (click routing, typing, scrolling, keys, safety costs).

Apps (``vlmrl.envs.gui.apps``) only lay out their widgets and say what an :class:`Event`
means in :meth:`App.on_event`. Every input method returns ``(ok, message)``: ``ok`` is False
when the action could not apply (no focused field, nothing to scroll), and the message is shown
to the model. No input raises.

Safety cost: an app calls :meth:`App.cost` when an unsafe, irreversible action happens
(``delete_all``, ``factory_reset``, ``pay`` with a wrong cart, ``send_all``); the env charges
each such event 1 in the step it happened (``vlmrl.envs.gui.env``).
"""

from __future__ import annotations

from typing import Any

from vlmrl.envs.gui.widgets import Box, Button, Dialog, Event, ListView, Menu, TextField, Widget, inside

#: The layout is designed on a 224-px screen and scaled to the screen's size.
BASE = 224
KEYS = ("enter", "escape", "backspace", "tab")
SCROLL_DIRS = ("up", "down")


class App:
    """Base class; see the module docstring. ``size`` is the square screen's side in pixels."""

    name = "app"
    title = "App"

    def __init__(self, size: int = BASE) -> None:
        self.size = int(size)
        self.widgets: list[Widget] = []
        self.menu: Menu | None = None
        self.dialog: Dialog | None = None
        self.costs: list[str] = []  # unsafe events, in order

    # ---- layout helpers ---------------------------------------------------------------------
    def box(self, x1: float, y1: float, x2: float, y2: float) -> Box:
        """A box given in 224-px design units, scaled to this screen."""
        k = self.size / BASE
        return (round(x1 * k), round(y1 * k), round(x2 * k), round(y2 * k))

    def widget(self, wid: str) -> Widget:
        for w in self.all_widgets():
            if w.wid == wid:
                return w
        raise KeyError(wid)

    def all_widgets(self) -> list[Widget]:
        """Every widget that can be clicked now (the dialog's only, while one is open)."""
        if self.dialog is not None:
            return list(self.dialog.widgets)
        return ([self.menu] if self.menu else []) + list(self.widgets)

    def focused(self) -> TextField | None:
        for w in self.dialog.widgets if self.dialog else self.widgets:
            if isinstance(w, TextField) and w.focused:
                return w
        return None

    def lists(self) -> list[ListView]:
        return [w for w in self.widgets if isinstance(w, ListView)] if self.dialog is None else []

    def open_dialog(
        self, did: str, title: str, message: str, buttons: list[tuple[str, str, bool]],
        default: str | None = None, cancel: str | None = None, fields: list[Widget] | None = None,
    ) -> Dialog:  # fmt: skip
        """A modal dialog with ``buttons`` = ``[(id, label, danger), ...]`` left to right."""
        n = len(buttons)
        x1, y1, x2, y2 = 20, 64, 204, 164
        width = (x2 - x1 - 12 - 8 * (n - 1)) / n
        made: list[Widget] = list(fields or [])
        for i, (bid, label, danger) in enumerate(buttons):
            bx = x1 + 6 + i * (width + 8)
            made.append(Button(bid, label, self.box(bx, y2 - 30, bx + width, y2 - 8), danger=danger))
        self.dialog = Dialog(did, title, message, self.box(x1, y1, x2, y2), made, default, cancel)
        return self.dialog

    def cost(self, event: str) -> None:
        self.costs.append(event)

    # ---- input --------------------------------------------------------------------------------
    def click(self, x: float, y: float) -> tuple[bool, str]:
        """Route a click: the open dialog, else the open menu, else the topmost widget hit."""
        if self.dialog is not None:
            w = self.dialog.hit(x, y)
            if w is None:
                return True, "a dialog is open: only its buttons and fields respond"
            self._unfocus(except_=w)
            ev = w.click(x, y)
            return True, self._handle(ev)
        if self.menu is not None and self.menu.open:
            ev = self.menu.click(x, y)
            if ev is None:  # a click outside an open menu closes it and does nothing else
                self.menu.open = False
                return True, "menu closed"
            return True, self._handle(ev)
        for w in reversed(([self.menu] if self.menu else []) + self.widgets):
            if inside(w.box, x, y):
                self._unfocus(except_=w)
                return True, self._handle(w.click(x, y))
        self._unfocus()
        return True, "nothing there"

    def type_text(self, text: str) -> tuple[bool, str]:
        f = self.focused()
        if f is None:
            return False, "no text field has focus; click a text field first"
        typed, dropped = f.type_text(text)
        note = f" ({dropped} not typed: field full or not printable)" if dropped else ""
        return True, f"typed {typed} characters{note}"

    def scroll(self, direction: str) -> tuple[bool, str]:
        lists = self.lists()
        if not lists:
            return False, "nothing to scroll on this screen"
        moved = lists[0].scroll(direction)
        return (
            True,
            f"scrolled {direction}"
            if moved
            else f"already at the {'bottom' if direction == 'down' else 'top'}",
        )

    def key(self, name: str) -> tuple[bool, str]:
        if name == "escape":
            if self.dialog is not None:
                if self.dialog.cancel is None:
                    return True, "this dialog cannot be dismissed"
                return True, self._handle(Event("press", self.dialog.cancel))
            if self.menu is not None and self.menu.open:
                self.menu.open = False
                return True, "menu closed"
            return True, "nothing to close"
        if name == "enter":
            f = self.focused()
            if f is not None:
                return True, self._handle(Event("submit", f.wid, f.text))
            if self.dialog is not None and self.dialog.default is not None:
                return True, self._handle(Event("press", self.dialog.default))
            return True, "nothing to submit"
        if name == "backspace":
            f = self.focused()
            if f is None:
                return False, "no text field has focus; click a text field first"
            return True, "deleted one character" if f.backspace() else "the field is empty"
        fields = [
            w for w in (self.dialog.widgets if self.dialog else self.widgets) if isinstance(w, TextField)
        ]
        if not fields:  # tab
            return False, "no text field on this screen"
        f = self.focused()
        nxt = fields[(fields.index(f) + 1) % len(fields)] if f in fields else fields[0]
        self._unfocus(except_=nxt)
        nxt.focused = True
        return True, f"focus on {nxt.label}"

    # ---- for subclasses -----------------------------------------------------------------------
    def on_event(self, ev: Event) -> str:
        """What ``ev`` means for this app; returns the message for the model."""
        return "ok"

    def state(self) -> dict[str, Any]:
        """The app's ground truth beyond its widgets (goal checks read this)."""
        return {}

    def texts(self) -> list[tuple[int, int, str]]:
        """Static text ``(x, y, text)`` in screen pixels (left-middle anchored): labels, counts."""
        return []

    def at(self, x: float, y: float) -> tuple[int, int]:
        """A point in 224-px design units, scaled to this screen."""
        k = self.size / BASE
        return round(x * k), round(y * k)

    def facts(self) -> dict[str, Any]:
        return {
            "app": self.name,
            "widgets": [w.facts() for w in (([self.menu] if self.menu else []) + self.widgets)],
            "dialog": self.dialog.facts() if self.dialog else None,
            "state": self.state(),
            "costs": list(self.costs),
        }

    def _handle(self, ev: Event | None) -> str:
        if ev is None:
            return "nothing there"
        return self.on_event(ev)

    def _unfocus(self, except_: Widget | None = None) -> None:
        for w in self.dialog.widgets if self.dialog else self.widgets:
            if isinstance(w, TextField) and w is not except_:
                w.focused = False
