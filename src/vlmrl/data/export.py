"""Write samples in the EasyR1 geometry3k parquet schema, so procedural and real data load alike.

Columns: ``images`` (list of ``{"bytes": PNG, "path": None}`` structs, the layout HF
``datasets`` uses for a list of ``Image`` features), ``problem`` (with ``<image>``
placeholders), ``answer``, and our extras ``id``, ``task``, ``answer_type``, ``facts`` (a JSON
string, because facts differ in shape from task to task and parquet wants one schema) and
``videos`` (per row a list of ``{"frames": [image structs], "fps": rate}``, one per ``<video>``;
empty for image tasks), which the loader reads back through :func:`vlmrl.data.video.read_video`.

The file carries the HF ``features`` metadata, so ``datasets.load_dataset("parquet", ...)``
decodes ``images`` to PIL images, exactly as for the hub's geometry3k. The features are
written in the older ``Sequence`` spelling, which both ``datasets`` 3.x and newer read.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from vlmrl.data.sample import Sample

_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
SCHEMA = pa.schema(
    [
        ("images", pa.list_(_IMAGE)),
        ("problem", pa.string()),
        ("answer", pa.string()),
        ("id", pa.string()),
        ("task", pa.string()),
        ("answer_type", pa.string()),
        ("facts", pa.string()),
        ("videos", pa.list_(pa.struct([("frames", pa.list_(_IMAGE)), ("fps", pa.float64())]))),
    ]
)
_STRING = {"dtype": "string", "_type": "Value"}
HF_FEATURES = {
    "images": {"feature": {"_type": "Image"}, "_type": "Sequence"},
    **{name: _STRING for name in ("problem", "answer", "id", "task", "answer_type", "facts")},
    "videos": {
        "feature": {
            "frames": {"feature": {"_type": "Image"}, "_type": "Sequence"},
            "fps": {"dtype": "float64", "_type": "Value"},
        },
        "_type": "Sequence",
    },
}


def image_to_png(image: Image.Image) -> bytes:
    """Lossless PNG bytes of ``image`` (RGB); the same pixels always give the same bytes."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def export_parquet(samples: Sequence[Sample], path: str | Path) -> Path:
    """Write ``samples`` to ``path`` (a ``.parquet`` file) in the geometry3k schema; returns the path.

    ``facts`` must be JSON-serialisable; a sample whose facts are not raises ``ValueError``
    naming its id, rather than writing a file that cannot be read back.
    """
    rows: dict[str, list] = {name: [] for name in SCHEMA.names}
    for s in samples:
        try:
            facts = json.dumps(s.facts, ensure_ascii=False)
        except TypeError as e:
            raise ValueError(f"sample {s.id!r}: facts are not JSON-serialisable: {e}") from e
        rows["images"].append([{"bytes": image_to_png(im), "path": None} for im in s.images])
        rows["problem"].append(s.problem)
        rows["answer"].append(s.answer)
        rows["id"].append(s.id)
        rows["task"].append(s.task)
        rows["answer_type"].append(s.answer_type)
        rows["facts"].append(facts)
        rows["videos"].append(
            [
                {"frames": [{"bytes": image_to_png(f), "path": None} for f in v.frames], "fps": v.fps}
                for v in s.videos
            ]
        )
    metadata = {"huggingface": json.dumps({"info": {"features": HF_FEATURES}})}
    table = pa.Table.from_pydict(rows, schema=SCHEMA.with_metadata(metadata))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path
