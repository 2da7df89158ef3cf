"""A TRL or EasyR1 user's own data and reward functions, unchanged, drive real GRPO steps.

The parquet uses its own column names (named with EasyR1's ``data.prompt_key`` / ``answer_key`` /
``image_key``), images as paths under a separate ``data.image_dir``, and an extra column that must
reach the reward as TRL passes columns: as keyword arguments.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from conftest import QUICK_RUN
from vlmrl.config import load_config
from vlmrl.data import DatasetError, generate, load_dataset
from vlmrl.train.grpo import GRPOTrainer

#: TRL's form, async as TRL allows: a batch of completions, every column as a keyword argument.
TRL_REWARD = '''
import json
from pathlib import Path

async def letters_times_level(completions, prompts, solution, level, **kwargs):
    """Fraction of letters among the first 8 characters, scaled by the row's level (1 or 2) / 2."""
    Path(__file__).with_name("seen.json").write_text(json.dumps(
        {"n": len(completions), "keys": sorted(kwargs) + ["level", "prompts", "solution"],
         "level": level, "solution": solution}))
    return [sum(ch.isalpha() for ch in c[:8]) / 8 * lv / 2 for c, lv in zip(completions, level)]
'''

#: EasyR1's ``reward_type: batch`` score function, in its own shape.
EASYR1_REWARD = """
def compute_score(reward_inputs, format_weight=0.1):
    scores = []
    for x in reward_inputs:
        letters = sum(ch.isalpha() for ch in x["response"][:8]) / 8
        accuracy = float(x["response"].strip() == x["ground_truth"])
        scores.append({"overall": (1 - format_weight) * accuracy + format_weight * letters,
                       "format": letters, "accuracy": accuracy, "length": float(x["response_length"])})
    return scores
"""


def write_own_dataset(root: Path, n: int = 6) -> tuple[Path, Path]:
    """``root/data/train.parquet`` with columns question / solution / image_paths / level and the
    images under ``root/pictures`` (not beside the parquet): the layout ``data.image_dir`` is for."""
    (root / "data").mkdir(parents=True)
    (root / "pictures").mkdir()
    rows: dict[str, list] = {"question": [], "solution": [], "image_paths": [], "level": []}
    for i, s in enumerate(generate("count", n, seed=3)):
        s.images[0].save(root / "pictures" / f"{i}.png")
        rows["question"].append(s.problem)
        rows["solution"].append(s.answer)
        rows["image_paths"].append([f"{i}.png"])
        rows["level"].append(1 + i % 2)
    path = root / "data" / "train.parquet"
    pq.write_table(pa.Table.from_pydict(rows), path)
    return path, root / "pictures"


def own_data_overrides(tiny_dir: Path, tmp_path: Path) -> list[str]:
    data, pictures = write_own_dataset(tmp_path)
    return [
        f"model.path={tiny_dir}",
        f"log.run_dir={tmp_path / 'run'}",
        *QUICK_RUN,
        f"data.path={data}@train",
        "data.prompt_key=question",
        "data.answer_key=solution",
        "data.image_key=image_paths",
        f"data.image_dir={pictures}",
        "train.steps=1",
    ]


def one_step_moves_every_trainable_parameter(trainer: GRPOTrainer) -> dict:
    model = trainer.policy.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    metrics = trainer.train_step()
    assert metrics["reward/std_in_group"] > 0  # advantages are not all zero: the step is not vacuous
    unchanged = [n for n, p in model.named_parameters() if p.requires_grad and torch.equal(p, before[n])]
    assert unchanged == []
    return metrics


def test_trl_async_batch_reward_drives_a_grpo_step(tiny_dir, tmp_path):
    (tmp_path / "rewards").mkdir()
    fn_file = tmp_path / "rewards" / "trl_reward.py"
    fn_file.write_text(TRL_REWARD)
    spec = f"{fn_file}:letters_times_level"
    cfg = load_config(
        overrides=[*own_data_overrides(tiny_dir, tmp_path), f"reward.weights={{'{spec}': 1.0}}"]
    )
    metrics = one_step_moves_every_trainable_parameter(GRPOTrainer(cfg))
    seen = json.loads((tmp_path / "rewards" / "seen.json").read_text())
    assert seen["n"] == 8  # one call for the whole batch: 2 prompts × 4 samples
    assert {"solution", "level", "question", "answer", "images"} <= set(seen["keys"])
    assert set(seen["level"]) <= {1, 2} and all(a.isdigit() for a in seen["solution"])
    assert "reward/letters_times_level" in metrics


def test_easyr1_score_function_drives_a_grpo_step(tiny_dir, tmp_path):
    fn_file = tmp_path / "math_score.py"
    fn_file.write_text(EASYR1_REWARD)
    spec = f"{fn_file}:compute_score"
    cfg = load_config(
        overrides=[
            *own_data_overrides(tiny_dir, tmp_path),
            f"reward.weights={{'{spec}': 1.0}}",
            f"reward.function_kwargs={{'{spec}': {{format_weight: 1.0}}}}",
        ]
    )
    metrics = one_step_moves_every_trainable_parameter(GRPOTrainer(cfg))
    # format_weight=1.0 reached the function: overall == format (the letter fraction)
    assert metrics["reward/compute_score"] == pytest.approx(metrics["reward/compute_score/format"])
    assert {"reward/compute_score/accuracy", "reward/compute_score/length"} <= set(metrics)
    assert 1 <= metrics["reward/compute_score/length"] <= 6  # tokens, at most rollout.max_new_tokens


def test_custom_keys_image_dir_split_and_columns(tmp_path):
    data, pictures = write_own_dataset(tmp_path)
    samples = load_dataset(
        f"{data}@validation", image_key="image_paths", problem_key="question", answer_key="solution",
        image_dir=pictures,
    )  # fmt: skip
    assert len(samples) == 6 and all(s.split == "validation" for s in samples)
    assert samples[1].columns == {"question": samples[1].problem, "solution": samples[1].answer, "level": 2}
    assert samples[0].images[0].size == generate("count", 1, seed=3)[0].images[0].size
    # without image_dir the paths resolve beside the parquet, where the images are not
    with pytest.raises(
        DatasetError, match=r"train\.parquet: row 0, field 'image_paths': image file '0\.png'"
    ):
        load_dataset(data, image_key="image_paths", problem_key="question", answer_key="solution")
    # a wrong key names the file and lists the columns there are
    with pytest.raises(
        DatasetError, match=r"train\.parquet has no column 'problem'; columns are \['question'"
    ):
        load_dataset(data, image_key="image_paths", image_dir=pictures)
    # an image path may not leave image_dir, even to a file that exists
    (pictures / "sub").mkdir()
    (tmp_path / "d.jsonl").write_text(json.dumps({"images": ["../0.png"], "problem": "?", "answer": "1"}))
    with pytest.raises(DatasetError, match=r"d\.jsonl: row 0, field 'images'.*outside the dataset folder"):
        load_dataset(tmp_path / "d.jsonl", image_dir=pictures / "sub")


def test_hf_folder_and_hub_id_take_a_split_after_the_at(tmp_path, monkeypatch):
    import datasets

    ds = datasets.Dataset.from_dict({"problem": ["a?", "b?"], "answer": ["1", "2"], "topic": ["x", "y"]})
    datasets.DatasetDict({"train": ds, "test": ds.select([1])}).save_to_disk(str(tmp_path / "hf"))
    (s,) = load_dataset(f"{tmp_path / 'hf'}@test", image_key=None)
    assert (s.answer, s.split, s.columns["topic"]) == ("2", "test", "y")
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda name, split: calls.append((name, split)) or ds)
    load_dataset("hiyouga/geometry3k@test", image_key=None)
    assert calls == [("hiyouga/geometry3k", "test")]
