"""The README stays a door, the docs cite only files in the repository, and the generated config
reference lists exactly the config's keys."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import typing
from pathlib import Path

import yaml

from vlmrl.config import load_config
from vlmrl.config.reference import config_reference
from vlmrl.config.schema import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_readme_is_a_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    # the demo's numbers are the ones its bench measured (one source: bench/results/demo.json)
    demo = json.loads((ROOT / "bench" / "results" / "demo.json").read_text())
    for row in demo["seeds"]:
        assert f"{row['before']:.3f}" in text and f"{row['after']:.3f}" in text
    assert "bench/demo_seeds.py" in text
    assert "make demo" in text and "make test" in text


def test_every_relative_link_is_a_file_in_the_repository():
    bad = []
    for md in markdown_files():
        text = re.sub(r"```.*?```", "", md.read_text(), flags=re.DOTALL)  # links inside code are text
        for target in LINK.findall(text):
            if target.startswith(("http://", "https://", "mailto:", "#")):
                continue
            path = (md.parent / target.split("#")[0]).resolve()
            if not path.is_relative_to(ROOT) or not path.exists():
                bad.append(f"{md.relative_to(ROOT)} -> {target}")
    assert bad == []


def leaf_keys(cls: type, prefix: str = "") -> list[str]:
    """The config's keys, walked here independently of ``vlmrl.config.reference``."""
    hints = typing.get_type_hints(cls)
    out: list[str] = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out += leaf_keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            out.append(f"{prefix}{f.name}")
    return out


def test_config_reference_lists_every_key_with_a_description():
    rows = [line for line in config_reference().splitlines() if line.startswith("| `")]
    keys = [re.match(r"\| `([^`]+)`", row).group(1) for row in rows]
    assert keys == leaf_keys(TrainConfig)
    assert len(keys) > 100
    empty = [row for row in rows if row.rstrip().endswith("|  |")]
    assert empty == []  # every field has a docstring
    assert "`data.prompt_key` | `str` | `'problem'` | Column holding the prompt text" in config_reference()


def test_the_quickstart_config_is_the_same_in_readme_and_docs_and_loads(tmp_path):
    def first_yaml(path: Path) -> str:
        return re.search(r"```yaml\n(.*?)```", path.read_text(), flags=re.DOTALL).group(1)

    readme = first_yaml(ROOT / "README.md")
    assert readme == first_yaml(ROOT / "docs" / "get-started" / "quickstart.md")
    (tmp_path / "q.yaml").write_text(readme)
    cfg = load_config(tmp_path / "q.yaml")
    assert cfg.model.path == "vlmrl-tiny-base" and cfg.reward.weights == {"accuracy": 1.0}
    assert yaml.safe_load(readme)["log"]["run_dir"] == "runs/quickstart"


def test_docs_hook_fills_the_generated_pages():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    page = "# x\n<!-- config-reference -->\n<!-- cli-reference -->\n<!-- easyr1-table -->\n"
    out = hooks.on_page_markdown(page, None, None, None)
    assert "<!--" not in out
    assert "| `worker.rollout.n` | `rollout.n` |" in out
    assert "## `vlmrl convert`" in out and "| `reward.judge.url` |" in out
