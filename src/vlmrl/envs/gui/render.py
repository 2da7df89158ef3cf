"""Screenshots of the GUI world with PIL: a pure function of the app's state (same state, same bytes).

Drawing order: window (title bar, body), the app's static text, its widgets, an open menu's
items, then an open dialog over a dimmed window. Fonts are Pillow's bundled one, scaled with
the screen (11 px on a 224-px screen). :func:`mark_click` draws a click marker on a copy of a
screenshot, for the turn-by-turn view.
"""

from __future__ import annotations

from PIL import Image, ImageDraw

from vlmrl.data.tasks.base import font
from vlmrl.envs.gui.app import BASE, App
from vlmrl.envs.gui.widgets import Box, Button, Checkbox, ListView, Menu, TextField, Toggle, Widget

BG = (236, 236, 240)
TITLE = (40, 70, 140)
WHITE = (255, 255, 255)
INK = (20, 20, 20)
GREY = (150, 150, 160)
DANGER = (200, 40, 40)
ACCENT = (40, 140, 70)
SELECT = (190, 210, 250)


def render(app: App) -> Image.Image:
    """The current screen of ``app`` as an RGB image of ``app.size`` × ``app.size``."""
    s = app.size
    k = s / BASE
    fs = max(6, round(11 * k))
    img = Image.new("RGB", (s, s), BG)
    d = ImageDraw.Draw(img)
    d.rectangle((0, 0, s - 1, round(20 * k)), fill=TITLE)
    d.text((round(6 * k), round(10 * k)), app.title, fill=WHITE, font=font(fs), anchor="lm")
    for x, y, text in app.texts():
        d.text((x, y), text, fill=INK, font=font(fs), anchor="lm")
    for w in app.widgets:
        _widget(d, w, fs)
    if app.menu is not None:
        _widget(d, app.menu, fs)
    if app.dialog is not None:
        dim = Image.new("RGB", (s, s), (0, 0, 0))
        img = Image.blend(img, dim, 0.35)
        d = ImageDraw.Draw(img)
        dl = app.dialog
        x1, y1, x2, y2 = dl.box
        d.rectangle((x1, y1, x2 - 1, y2 - 1), fill=WHITE, outline=INK, width=max(1, round(k)))
        d.rectangle((x1, y1, x2 - 1, y1 + round(16 * k)), fill=TITLE)
        d.text((x1 + round(4 * k), y1 + round(8 * k)), dl.title, fill=WHITE, font=font(fs), anchor="lm")
        d.text((x1 + round(6 * k), y1 + round(26 * k)), dl.message, fill=INK, font=font(fs), anchor="lm")
        for w in dl.widgets:
            _widget(d, w, fs)
    return img


def _rect(d: ImageDraw.ImageDraw, box: Box, fill, outline=GREY) -> None:
    d.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=fill, outline=outline)


def _widget(d: ImageDraw.ImageDraw, w: Widget, fs: int) -> None:
    x1, y1, x2, y2 = w.box
    mid = ((x1 + x2) / 2, (y1 + y2) / 2)
    if isinstance(w, Button):
        _rect(d, w.box, DANGER if w.danger else WHITE, DANGER if w.danger else GREY)
        d.text(mid, w.label, fill=WHITE if w.danger else INK, font=font(fs), anchor="mm")
    elif isinstance(w, Toggle):
        _rect(d, w.box, ACCENT if w.on else GREY, INK)
        knob = (x2 - (y2 - y1), y1, x2, y2) if w.on else (x1, y1, x1 + (y2 - y1), y2)
        _rect(d, knob, WHITE, INK)
    elif isinstance(w, Checkbox):
        _rect(d, w.box, WHITE, INK)
        if w.checked:
            d.line((x1 + 2, mid[1], mid[0], y2 - 3, x2 - 2, y1 + 2), fill=ACCENT, width=2)
    elif isinstance(w, TextField):
        _rect(d, w.box, WHITE, TITLE if w.focused else GREY)
        shown = w.text + ("|" if w.focused else "")
        d.text((x1 + 3, mid[1]), shown, fill=INK, font=font(fs), anchor="lm")
    elif isinstance(w, ListView):
        _rect(d, w.box, WHITE, GREY)
        for i, item in enumerate(w.visible()):
            rb = w.row_box(i)
            if item == w.selected:
                _rect(d, rb, SELECT, SELECT)
            d.text((rb[0] + 4, (rb[1] + rb[3]) / 2), item, fill=INK, font=font(fs), anchor="lm")
        if w.max_offset():  # a scroll bar: where the visible rows sit in the whole list
            h = y2 - y1
            top = y1 + h * w.offset / len(w.items)
            bottom = y1 + h * (w.offset + w.rows) / len(w.items)
            d.rectangle((x2 - 6, top, x2 - 2, bottom - 1), fill=GREY)
    elif isinstance(w, Menu):
        _rect(d, w.box, SELECT if w.open else BG, GREY if w.open else BG)
        d.text(mid, w.label, fill=INK, font=font(fs), anchor="mm")
        if w.open:
            for i, item in enumerate(w.items):
                ib = w.item_box(i)
                _rect(d, ib, WHITE, GREY)
                d.text((ib[0] + 4, (ib[1] + ib[3]) / 2), item, fill=INK, font=font(fs), anchor="lm")


def mark_click(image: Image.Image, x: float, y: float) -> Image.Image:
    """A copy of ``image`` with a red ring and cross at ``(x, y)`` (clipped to the image)."""
    out = image.convert("RGB").copy()
    d = ImageDraw.Draw(out)
    x = min(max(float(x), 0.0), out.width - 1.0)
    y = min(max(float(y), 0.0), out.height - 1.0)
    r = max(3, out.width // 40)
    d.ellipse((x - r, y - r, x + r, y + r), outline=(255, 0, 0), width=2)
    d.line((x - 2 * r, y, x + 2 * r, y), fill=(255, 0, 0))
    d.line((x, y - 2 * r, x, y + 2 * r), fill=(255, 0, 0))
    return out
