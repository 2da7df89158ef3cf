"""Load real or exported datasets into :class:`Sample` lists, validating at the edge.

``load_dataset`` accepts, in this order of checks:

1. a ``.parquet`` file (EasyR1 / geometry3k schema, or anything with the named columns);
2. a ``.jsonl`` file, one object per line, images given as paths relative to the file's folder;
3. a directory: an HF ``save_to_disk`` folder, or a folder of parquet/jsonl files (files whose
   name or parent folder starts with the split name are picked, e.g. ``train-0000.parquet``);
4. anything else is passed to ``datasets.load_dataset(path_or_id, split=split)`` (a hub id).

``NAME@SPLIT`` (EasyR1's form, e.g. ``hiyouga/geometry3k@test`` or ``data/all.parquet@train``)
picks the split in the name itself. Column names are the caller's (EasyR1's ``prompt_key``,
``answer_key``, ``image_key``); every other column of a row is kept in ``Sample.columns`` so
rewards can read it. Relative image paths resolve against ``image_dir`` when given (EasyR1's
``data.image_dir``), else against the data file's folder, and must stay inside that folder.

Every problem is reported as one :class:`DatasetError` naming the file, the row (0-based) and the
field. Two normalisations happen on purpose: images become RGB, and a problem with *no*
``<image>`` placeholder but exactly one image gets one prepended (some geometry3k-style prompts
omit it; the image then comes before the text, as geometry3k's own prompts put it). Any other
mismatch between placeholders and images is an error, since guessing would misplace images.

Images out of bounds are caught here, naming the row, rather than deep in the processor at the
first training step: an aspect ratio above :data:`MAX_ASPECT_RATIO` (Qwen2-VL's processor raises
"absolute aspect ratio must be smaller than 200") or a side under :data:`MIN_IMAGE_SIDE` px.
``image_bounds="reject"`` (the default) stops with one line; ``"resize"`` pads the short side
(black, centred) up to the ratio bound and enlarges tiny images. Text that is not UTF-8 and NUL
bytes in image paths are row errors too. A ``video_key`` column holds videos, one ``<video>``
placeholder each (frames sampled and checked by :mod:`vlmrl.data.video`).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from vlmrl.data.sample import ANSWER_TYPES, IMAGE_PLACEHOLDER, Sample
from vlmrl.data.video import FrameSpec, row_videos
from vlmrl.errors import UserError

IMAGE_BOUNDS = ("reject", "resize")
"""What ``data.image_bounds`` may say (the config's choices are this tuple): refuse a row whose image
the processor would refuse, or pad/enlarge it."""

SUFFIXES = (".parquet", ".jsonl")
#: Qwen2-VL's ``smart_resize`` refuses images whose long side exceeds 200 × the short one.
MAX_ASPECT_RATIO = 200
#: Below this many pixels a side an image holds nothing a 14-px patch can see (a broken file, as a rule).
MIN_IMAGE_SIDE = 4


class DatasetError(UserError):
    """A dataset could not be read; the message names the file, row and field."""


@dataclass(frozen=True)
class _Keys:
    """How rows are read: the column names, and what to do with out-of-bounds images."""

    image: str | None
    problem: str
    answer: str
    image_bounds: str = "reject"
    video: str | None = None
    frames: FrameSpec = FrameSpec()  # noqa: RUF009 - frozen, so one shared default is safe


@dataclass(frozen=True)
class _Source:
    """Where rows come from: a name for messages, and the folder image paths must stay inside."""

    name: str
    root: Path | None  # None: paths are trusted as given (HF datasets)


def load_dataset(
    path_or_id: str | Path,
    split: str = "train",
    image_key: str | None = "images",
    problem_key: str = "problem",
    answer_key: str = "answer",
    image_dir: str | Path | None = None,
    image_bounds: str = "reject",
    video_key: str | None = "videos",
    frames: FrameSpec | None = None,
) -> list[Sample]:
    """Read a parquet/jsonl file, a folder of them, an HF ``save_to_disk`` folder or a hub id.

    ``image_key=None`` reads a text-only dataset; ``image_bounds``: ``reject`` | ``resize``
    (``data.image_bounds``); ``video_key`` names the videos column, sampled by ``frames``. See the
    module docstring for the rules.
    """
    if image_bounds not in IMAGE_BOUNDS:
        raise DatasetError(f"data.image_bounds: {image_bounds!r}; allowed: {list(IMAGE_BOUNDS)}")
    path_or_id, split = split_spec(str(path_or_id), split)
    keys = _Keys(image_key, problem_key, answer_key, image_bounds, video_key, frames or FrameSpec())
    root = None
    if image_dir is not None:
        root = Path(image_dir).expanduser().resolve()
        if not root.is_dir():
            raise DatasetError(f"data.image_dir {str(image_dir)!r} is not a folder")
    path = Path(path_or_id).expanduser()
    if path.is_file():
        return _load_file(path, split, keys, root)
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            return _load_hf_disk(path, split, keys, root)
        files = _split_files(path, split)
        return [s for f in files for s in _load_file(f, split, keys, root)]
    if path.suffix in SUFFIXES or path_or_id.startswith((".", "/", "~")):
        raise DatasetError(f"dataset file or folder {path_or_id!r} does not exist")
    return _load_hub(path_or_id, split, keys, root)


def split_spec(spec: str, default: str) -> tuple[str, str]:
    """``NAME@SPLIT`` → ``(NAME, SPLIT)``; anything else keeps ``default`` (a path that exists
    as written, ``@`` and all, is a path).

    >>> split_spec("hiyouga/geometry3k@test", "train"), split_spec("data/x.parquet", "train")
    (('hiyouga/geometry3k', 'test'), ('data/x.parquet', 'train'))
    """
    name, at, split = spec.rpartition("@")
    if not at or not name or not split or "/" in split or Path(spec).expanduser().exists():
        return spec, default
    return name, split


def _load_file(path: Path, split: str, keys: _Keys, image_dir: Path | None = None) -> list[Sample]:
    src = _Source(str(path), image_dir or path.parent.resolve())
    if path.suffix == ".parquet":
        return _rows_to_samples(_parquet_rows(path, keys), src, split, keys)
    if path.suffix == ".jsonl":
        return _rows_to_samples(_jsonl_rows(path, keys), src, split, keys)
    raise DatasetError(f"file {path}: unsupported type {path.suffix!r}; expected one of {list(SUFFIXES)}")


def _required(keys: _Keys) -> list[str]:
    return [k for k in (keys.image, keys.problem, keys.answer) if k is not None]


def _parquet_rows(path: Path, keys: _Keys) -> Iterator[tuple[int, dict]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        raise DatasetError(f"file {path}: cannot read as parquet: {e}") from e
    columns = pf.schema_arrow.names
    for k in _required(keys):
        if k not in columns:
            raise DatasetError(f"file {path.name} has no column {k!r}; columns are {columns}")
    i = 0
    for batch in pf.iter_batches(batch_size=256):
        for row in batch.to_pylist():
            yield i, row
            i += 1


def _jsonl_rows(path: Path, keys: _Keys) -> Iterator[tuple[int, dict]]:
    i = 0
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DatasetError(
                    f"{path}: row {i} (line {line_no}): not UTF-8 text (byte {e.start}: {raw[e.start]:#04x})"
                ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}: row {i} (line {line_no}): invalid JSON: {e}") from e
            if not isinstance(row, dict):
                raise DatasetError(f"{path}: row {i} (line {line_no}): expected a JSON object")
            for k in _required(keys):
                if k not in row:
                    raise DatasetError(
                        f"file {path.name}: row {i} (line {line_no}) has no field {k!r}; "
                        f"fields are {list(row)}"
                    )
            yield i, row
            i += 1


def _split_files(folder: Path, split: str) -> list[Path]:
    """Data files of ``split`` in ``folder`` (recursively); all files if none is split-tagged."""
    files = sorted(p for p in folder.rglob("*") if p.suffix in SUFFIXES and p.is_file())
    if not files:
        raise DatasetError(f"folder {folder} has no {' or '.join(SUFFIXES)} files and is not an HF dataset")

    def tag(p: Path) -> str:
        rel = p.relative_to(folder)
        return rel.parts[0] if len(rel.parts) > 1 else p.stem

    def matches(p: Path, name: str) -> bool:
        t = tag(p)
        return t == name or t.startswith((f"{name}-", f"{name}_", f"{name}."))

    chosen = [p for p in files if matches(p, split)]
    if chosen:
        return chosen
    known = ("train", "test", "validation", "val", "dev", "eval")
    if any(matches(p, k) for p in files for k in known):
        names = [str(p.relative_to(folder)) for p in files]
        raise DatasetError(f"folder {folder} has no files for split {split!r}; files are {names}")
    return files


def _load_hf_disk(folder: Path, split: str, keys: _Keys, image_dir: Path | None) -> list[Sample]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(folder))
    except Exception as e:
        raise DatasetError(f"folder {folder}: cannot load HF dataset: {e}") from e
    return _hf_to_samples(ds, str(folder), split, keys, image_dir)


def _load_hub(name: str, split: str, keys: _Keys, image_dir: Path | None) -> list[Sample]:
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:
        raise DatasetError(
            f"dataset {name!r} (split {split!r}): cannot load with datasets.load_dataset: {e}"
        ) from e
    return _hf_to_samples(ds, name, split, keys, image_dir)


def _hf_to_samples(ds: Any, name: str, split: str, keys: _Keys, image_dir: Path | None) -> list[Sample]:
    """Read an HF Dataset through Arrow, so images arrive as raw ``{bytes, path}`` structs and a
    corrupt image is reported by our row/field message rather than deep inside ``datasets``."""
    if isinstance(ds, dict):  # a DatasetDict (a dict subclass): pick the split
        if split not in ds:
            raise DatasetError(f"dataset {name}: no split {split!r}; splits are {list(ds.keys())}")
        ds = ds[split]
    columns = list(ds.column_names)
    for k in _required(keys):
        if k not in columns:
            raise DatasetError(f"dataset {name} has no column {k!r}; columns are {columns}")
    rows = ds.with_format("arrow")[:].to_pylist()
    return _rows_to_samples(enumerate(rows), _Source(name, image_dir), split, keys)


def _rows_to_samples(rows: Iterable[tuple[int, dict]], src: _Source, split: str, keys: _Keys) -> list[Sample]:
    stem = Path(src.name).stem or "row"
    return [_row_to_sample(i, row, src, split, keys, stem) for i, row in rows]


def _row_to_sample(i: int, row: dict, src: _Source, split: str, keys: _Keys, stem: str) -> Sample:
    def where(field: str) -> str:
        return f"{src.name}: row {i}, field {field!r}"

    images = [] if keys.image is None else _images(row.get(keys.image), src, where(keys.image))
    images = [fit_image(im, keys.image_bounds, f"{where(keys.image)}[{j}]") for j, im in enumerate(images)]
    problem = row.get(keys.problem)
    if not isinstance(problem, str):
        raise DatasetError(f"{where(keys.problem)}: expected a string, got {type(problem).__name__}")
    videos = row_videos(row.get(keys.video) if keys.video else None, problem, where(keys.video), keys.frames,
                        lambda x, w: _image(x, src, w), lambda p, w: _resolve(p, src, w))  # fmt: skip
    n_ph = problem.count(IMAGE_PLACEHOLDER)
    if n_ph == 0 and len(images) == 1:
        problem = IMAGE_PLACEHOLDER + problem
    elif n_ph != len(images):
        raise DatasetError(
            f"{where(keys.problem)}: has {n_ph} {IMAGE_PLACEHOLDER!r} placeholder(s) but the row has "
            f"{len(images)} image(s); they must match (one placeholder per image)"
        )
    answer = row.get(keys.answer)
    if answer is None or isinstance(answer, (dict, list)):
        raise DatasetError(f"{where(keys.answer)}: expected a string or number, got {answer!r}")
    answer_type = row.get("answer_type") or "math"
    if answer_type not in ANSWER_TYPES:
        raise DatasetError(f"{where('answer_type')}: {answer_type!r} is not one of {list(ANSWER_TYPES)}")
    return Sample(
        id=str(row.get("id") or f"{stem}-{i}"),
        images=images,
        problem=problem,
        answer=str(answer),
        task=str(row.get("task") or "custom"),
        answer_type=answer_type,
        facts=_facts(row.get("facts"), where("facts")),
        split=split,
        columns={k: v for k, v in row.items() if k not in (keys.image, keys.video)},
        videos=videos,
    )


def _facts(value: Any, where: str) -> dict[str, Any]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{where}: invalid JSON: {e}") from e
    if not isinstance(value, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def _images(value: Any, src: _Source, where: str) -> list[Image.Image]:
    """Decode one row's image field: a list (or one) of bytes structs, bytes, PIL images, paths."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    return [_image(item, src, f"{where}[{j}]" if len(items) > 1 else where) for j, item in enumerate(items)]


def _image(item: Any, src: _Source, where: str) -> Image.Image:
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if isinstance(item, dict):
        if item.get("bytes") is not None:
            item = item["bytes"]
        elif item.get("path"):
            item = item["path"]
        else:
            raise DatasetError(f"{where}: image struct has neither 'bytes' nor 'path'")
    if isinstance(item, (bytes, bytearray, memoryview)):
        return _decode(io.BytesIO(bytes(item)), where)
    if isinstance(item, (str, Path)):
        return _decode(_resolve(Path(item), src, where), where)
    raise DatasetError(f"{where}: unsupported image value of type {type(item).__name__}")


def _resolve(path: Path, src: _Source, where: str) -> Path:
    """Image paths resolve inside the dataset's folder (or ``image_dir``); escaping it (``../``,
    absolute) is an error, so a dataset file cannot make us read arbitrary files on the machine."""
    if "\x00" in str(path):
        raise DatasetError(f"{where}: image path {str(path)!r} holds a NUL byte")
    if src.root is None:
        full = path
    else:
        full = (src.root / path).resolve()
        if not full.is_relative_to(src.root):
            raise DatasetError(f"{where}: image path '{path}' resolves outside the dataset folder {src.root}")
    if not full.is_file():
        raise DatasetError(f"{where}: image file '{path}' not found")
    return full


def _decode(fp: io.BytesIO | Path, where: str) -> Image.Image:
    try:
        with Image.open(fp) as im:
            im.load()
            return im.convert("RGB")
    except Exception as e:
        raise DatasetError(f"{where}: cannot decode image: {e}") from e


def fit_image(im: Image.Image, bounds: str, where: str) -> Image.Image:
    """``im`` if within :data:`MAX_ASPECT_RATIO` and :data:`MIN_IMAGE_SIDE`; else, with
    ``bounds="resize"``, enlarged (nearest) to the minimum side and padded (black, centred) on the
    short side to the ratio bound; with ``"reject"``, a :class:`DatasetError` naming ``where``.

    >>> fit_image(Image.new("RGB", (8000, 8)), "resize", "row 0").size
    (8000, 40)
    """
    w, h = im.size
    ratio = max(w, h) / max(min(w, h), 1)
    if min(w, h) >= MIN_IMAGE_SIDE and ratio <= MAX_ASPECT_RATIO:
        return im
    if bounds != "resize":
        raise DatasetError(
            f"{where}: image {w}×{h} is out of bounds (aspect ratio ≤ {MAX_ASPECT_RATIO}, sides ≥ "
            f"{MIN_IMAGE_SIDE} px); fix or drop the row, or set data.image_bounds=resize"
        )
    if min(w, h) < MIN_IMAGE_SIDE:
        scale = MIN_IMAGE_SIDE / max(min(w, h), 1)
        w, h = max(MIN_IMAGE_SIDE, round(w * scale)), max(MIN_IMAGE_SIDE, round(h * scale))
        im = im.resize((w, h), Image.Resampling.NEAREST)
    short = -(-max(w, h) // MAX_ASPECT_RATIO)  # ceil: the least short side the bound allows
    if min(w, h) < short:
        size = (w, short) if w >= h else (short, h)
        canvas = Image.new("RGB", size)
        canvas.paste(im, ((size[0] - w) // 2, (size[1] - h) // 2))
        im = canvas
    return im
