"""Export and load: parquet round trip, jsonl with image paths, HF folders, prompts, bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from vlmrl.data import (
    DatasetError,
    Sample,
    build_messages,
    export_parquet,
    generate,
    list_templates,
    load_dataset,
    render_prompt,
    save_grid,
    task_names,
)
from vlmrl.data.video import FrameSpec


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"))


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def solid(color: tuple[int, int, int], size: int = 16) -> Image.Image:
    return Image.new("RGB", (size, size), color)


def write_parquet(path: Path, rows: dict[str, list]) -> Path:
    pq.write_table(pa.Table.from_pydict(rows), path)
    return path


def good_rows(n: int = 5) -> dict[str, list]:
    return {
        "images": [[{"bytes": png_bytes(solid((i * 40, 0, 0))), "path": None}] for i in range(n)],
        "problem": [f"<image>Question {i}?" for i in range(n)],
        "answer": [str(i) for i in range(n)],
    }


# ---- round trips ---------------------------------------------------------------------------------


def test_parquet_round_trip(tmp_path: Path) -> None:
    samples = [s for t in task_names() for s in generate(t, 2, seed=5)]
    path = export_parquet(samples, tmp_path / "out" / "train.parquet")
    schema = pq.read_schema(path)
    assert schema.names[:3] == ["images", "problem", "answer"]
    assert {"facts", "task", "answer_type", "id"} <= set(schema.names)
    assert b"huggingface" in schema.metadata  # HF datasets decodes `images` as Image features
    loaded = load_dataset(path, frames=FrameSpec(fps=8.0))  # the video tasks' own rate: every frame kept
    assert len(loaded) == len(samples)
    for a, b in zip(samples, loaded, strict=True):
        assert (a.id, a.problem, a.answer, a.task, a.answer_type, a.facts) == (
            b.id, b.problem, b.answer, b.task, b.answer_type, b.facts,
        )  # fmt: skip
        assert len(a.images) == len(b.images) and len(a.videos) == len(b.videos)
        assert all(np.array_equal(pixels(x), pixels(y)) for x, y in zip(a.images, b.images, strict=True))
        for v, w in zip(a.videos, b.videos, strict=True):
            assert v.fps == w.fps and len(v.frames) == len(w.frames)
            assert all(np.array_equal(pixels(x), pixels(y)) for x, y in zip(v.frames, w.frames, strict=True))
    # the folder form finds train.parquet by its split name
    assert [s.id for s in load_dataset(tmp_path / "out", split="train")] == [s.id for s in samples]


def test_folder_split_selection(tmp_path: Path) -> None:
    export_parquet(generate("color", 3, seed=0), tmp_path / "train.parquet")
    export_parquet(generate("color", 2, seed=0, split="test"), tmp_path / "test-00000-of-00001.parquet")
    assert len(load_dataset(tmp_path, split="train")) == 3
    test = load_dataset(tmp_path, split="test")
    assert len(test) == 2 and all(s.split == "test" for s in test)
    with pytest.raises(DatasetError, match=r"no files for split 'validation'; files are \["):
        load_dataset(tmp_path, split="validation")


def test_jsonl_with_image_paths(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    solid((255, 0, 0)).save(tmp_path / "img" / "a.png")
    solid((0, 0, 255), size=20).convert("L").save(tmp_path / "img" / "b.png")  # grey -> converted to RGB
    rows = [
        {"images": ["img/a.png"], "problem": "<image>What colour?", "answer": "red", "task": "color"},
        {"images": ["img/a.png", "img/b.png"], "problem": "Compare <image> and <image>.", "answer": 3},
        {"images": "img/b.png", "problem": "Is it dark?", "answer": "yes", "answer_type": "yesno"},
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    a, b, c = load_dataset(path)
    assert a.task == "color" and a.answer == "red" and pixels(a.images[0])[0, 0].tolist() == [255, 0, 0]
    assert len(b.images) == 2 and b.answer == "3" and b.images[1].mode == "RGB"
    assert c.problem == "<image>Is it dark?"  # one image, no placeholder: one is prepended
    assert c.answer_type == "yesno" and c.id == "data-2"


def test_hf_save_to_disk_folder(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {
            "images": datasets.Sequence(datasets.Image()),
            "problem": datasets.Value("string"),
            "answer": datasets.Value("string"),
        }
    )
    data = {
        "images": [[solid((0, 200, 0))], [solid((9, 9, 9))]],
        "problem": ["<image>Colour?", "Find x."],
        "answer": ["green", "42"],
    }
    ds = datasets.Dataset.from_dict(data, features=features)
    ds.save_to_disk(str(tmp_path / "one"))
    loaded = load_dataset(tmp_path / "one")
    assert [s.answer for s in loaded] == ["green", "42"]
    assert loaded[1].problem == "<image>Find x."
    assert pixels(loaded[0].images[0])[0, 0].tolist() == [0, 200, 0]
    datasets.DatasetDict({"train": ds, "test": ds.select([1])}).save_to_disk(str(tmp_path / "dict"))
    assert [s.answer for s in load_dataset(tmp_path / "dict", split="test")] == ["42"]
    with pytest.raises(DatasetError, match=r"no split 'dev'; splits are \['train', 'test'\]"):
        load_dataset(tmp_path / "dict", split="dev")


def test_hub_ids_go_to_datasets_load_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name that is not a local path is handed to ``datasets.load_dataset`` (mocked: no network)."""
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake(name: str, split: str):
        calls.append((name, split))
        return datasets.Dataset.from_dict(
            {"image": [png_bytes(solid((5, 5, 5)))], "q": ["Find x."], "a": ["1"]}
        )

    monkeypatch.setattr(datasets, "load_dataset", fake)
    (s,) = load_dataset(
        "hiyouga/geometry3k", split="test", image_key="image", problem_key="q", answer_key="a"
    )
    assert calls == [("hiyouga/geometry3k", "test")]
    assert s.problem == "<image>Find x." and s.answer == "1" and s.split == "test"


# ---- bad input: one clear error naming file, row and field ------------------------------------------


def test_corrupt_image_names_row_and_field(tmp_path: Path) -> None:
    rows = good_rows()
    rows["images"][3] = [{"bytes": b"\x89PNG but not really", "path": None}]
    path = write_parquet(tmp_path / "bad.parquet", rows)
    with pytest.raises(DatasetError, match=r"bad\.parquet: row 3, field 'images': cannot decode image: "):
        load_dataset(path)


def test_missing_column_lists_columns(tmp_path: Path) -> None:
    rows = good_rows()
    rows["question"] = rows.pop("problem")
    path = write_parquet(tmp_path / "x.parquet", rows)
    msg = r"file x\.parquet has no column 'problem'; columns are \['images', 'answer', 'question'\]"
    with pytest.raises(DatasetError, match=msg):
        load_dataset(path)
    # ... and the right key names make the same file load
    assert len(load_dataset(path, problem_key="question")) == 5


def test_image_path_escaping_the_folder(tmp_path: Path) -> None:
    solid((1, 2, 3)).save(tmp_path / "secret.png")  # exists, so only the escape check can refuse it
    (tmp_path / "ds").mkdir()
    for bad in ["../secret.png", str(tmp_path / "secret.png")]:
        row = {"images": [bad], "problem": "<image>?", "answer": "a"}
        (tmp_path / "ds" / "d.jsonl").write_text(json.dumps(row) + "\n")
        with pytest.raises(
            DatasetError, match=r"row 0, field 'images': image path .* outside the dataset folder"
        ):
            load_dataset(tmp_path / "ds" / "d.jsonl")


def test_placeholder_mismatch_and_other_row_errors(tmp_path: Path) -> None:
    rows = good_rows()
    rows["problem"][2] = "<image> vs <image>"
    with pytest.raises(
        DatasetError, match=r"row 2, field 'problem': has 2 '<image>' placeholder\(s\) but .* 1 image"
    ):
        load_dataset(write_parquet(tmp_path / "a.parquet", rows))
    rows = good_rows()
    rows["answer"][1] = None
    with pytest.raises(DatasetError, match=r"row 1, field 'answer': expected a string or number, got None"):
        load_dataset(write_parquet(tmp_path / "b.parquet", rows))
    (tmp_path / "c.jsonl").write_text('{"images": [], "problem": "p", "answer": "a"}\n{oops\n')
    with pytest.raises(DatasetError, match=r"c\.jsonl: row 1 \(line 2\): invalid JSON"):
        load_dataset(tmp_path / "c.jsonl")
    (tmp_path / "d.jsonl").write_text('{"images": ["nope.png"], "problem": "p", "answer": "a"}\n')
    with pytest.raises(DatasetError, match=r"row 0, field 'images': image file 'nope.png' not found"):
        load_dataset(tmp_path / "d.jsonl")
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "missing.parquet")


def test_export_refuses_unserialisable_facts(tmp_path: Path) -> None:
    s = Sample(id="x1", images=[solid((0, 0, 0))], problem="<image>?", answer="a", facts={"bad": {1, 2}})
    with pytest.raises(ValueError, match="sample 'x1': facts are not JSON-serialisable"):
        export_parquet([s], tmp_path / "x.parquet")


# ---- prompts ---------------------------------------------------------------------------------------


def two_image_sample() -> Sample:
    imgs = [solid((255, 0, 0)), solid((0, 0, 255))]
    return Sample(id="t", images=imgs, problem="Compare <image> with <image> now.", answer="a")


def test_build_messages_places_images_where_placeholders_were() -> None:
    (msg,) = build_messages(two_image_sample(), "answer")
    assert msg["role"] == "user"
    kinds = [c["type"] for c in msg["content"]]
    assert kinds == ["text", "image", "text", "image", "text"]
    assert msg["content"][0]["text"] == "Compare "
    assert msg["content"][2]["text"] == " with "
    assert msg["content"][4]["text"].startswith(" now.") and "<answer>" in msg["content"][4]["text"]
    (msg,) = build_messages(two_image_sample(), "answer", embed_images=True)
    assert [pixels(c["image"])[0, 0].tolist() for c in msg["content"] if c["type"] == "image"] == [
        [255, 0, 0],
        [0, 0, 255],
    ]
    (s,) = generate("count", 1, seed=0)
    content = build_messages(s, "look")[0]["content"]
    assert content[0] == {"type": "image"} and content[1]["text"].startswith("How many")
    assert "<look>" in content[1]["text"] and "<think>" in content[1]["text"]


def test_templates_by_name_and_path(tmp_path: Path) -> None:
    assert {"answer", "look", "math"} <= set(list_templates())
    (s,) = generate("geometry", 1, seed=0)
    assert "\\boxed{}" in render_prompt(s, "math") and "<think>" in render_prompt(s, "math")
    custom = tmp_path / "mine.jinja"
    custom.write_text("[{{ task }}] {{ content }} Reply briefly.\n")
    text = render_prompt(s, str(custom))
    assert text.startswith("[geometry] <image>") and text.endswith("cm? Reply briefly.")
    with pytest.raises(ValueError, match=r"unknown prompt template 'nope'.*\['answer', 'look', 'math'"):
        render_prompt(s, "nope")
    leaky = tmp_path / "leak.jinja"
    leaky.write_text("{{ content }} The answer is {{ answer }}.")
    with pytest.raises(
        ValueError, match="'answer' is undefined; templates see only content, task, answer_type"
    ):
        render_prompt(s, str(leaky))
    dropper = tmp_path / "drop.jinja"
    dropper.write_text("No image here.")
    with pytest.raises(ValueError, match="produced 0 '<image>' placeholder"):
        build_messages(s, str(dropper))


def test_save_grid(tmp_path: Path) -> None:
    samples = generate("count", 3, seed=0) + generate("chart", 2, seed=0)
    path = save_grid(samples, tmp_path / "g.png", cols=3, cell=100)
    img = Image.open(path)
    assert img.width == 3 * 116 and img.height > 2 * 116
