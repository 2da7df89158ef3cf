"""``vlmrl convert easyr1``: EasyR1's example config, key by key; nothing dropped silently; the result
trains (one GRPO step on the tiny model with an EasyR1 score function)."""

from __future__ import annotations

import yaml

from test_own_data import EASYR1_REWARD, one_step_moves_every_trainable_parameter, write_own_dataset
from vlmrl.cli.main import main
from vlmrl.config import load_config
from vlmrl.config.easyr1 import TABLE, _leaves, convert, rule_for
from vlmrl.train.grpo import GRPOTrainer

#: The shape and values of EasyR1's examples/config.yaml (its keys and defaults, written out here).
EASYR1_EXAMPLE = """
data:
  train_files: hiyouga/math12k@train
  val_files: hiyouga/math12k@test
  prompt_key: problem
  answer_key: answer
  image_key: images
  video_key: videos
  image_dir: null
  video_fps: 2.0
  max_prompt_length: 2048
  max_response_length: 2048
  rollout_batch_size: 512
  mini_rollout_batch_size: null
  val_batch_size: 1024
  format_prompt: ./examples/format_prompt/math.jinja
  override_chat_template: null
  shuffle: true
  seed: 1
  min_pixels: 262144
  max_pixels: 4194304
  filter_overlong_prompts: true
algorithm:
  adv_estimator: grpo
  disable_kl: false
  use_kl_loss: true
  kl_penalty: low_var_kl
  kl_coef: 1.0e-2
  online_filtering: false
  filter_key: overall
  filter_low: 0.01
  filter_high: 0.99
worker:
  actor:
    global_batch_size: 128
    micro_batch_size_per_device_for_update: 1
    micro_batch_size_per_device_for_experience: 2
    max_grad_norm: 1.0
    padding_free: true
    dynamic_batching: true
    ulysses_size: 1
    model:
      model_path: Qwen/Qwen2.5-7B-Instruct
      enable_gradient_checkpointing: true
      trust_remote_code: false
      freeze_vision_tower: false
    optim:
      lr: 1.0e-6
      weight_decay: 1.0e-2
      strategy: adamw
      lr_warmup_ratio: 0.0
    fsdp:
      enable_full_shard: true
      enable_cpu_offload: false
      enable_rank0_init: true
    offload:
      offload_params: true
      offload_optimizer: true
  rollout:
    n: 5
    temperature: 1.0
    top_p: 1.0
    limit_images: 0
    gpu_memory_utilization: 0.6
    enforce_eager: false
    enable_chunked_prefill: false
    tensor_parallel_size: 2
    disable_tqdm: false
    val_override_config:
      temperature: 0.6
      top_p: 0.95
      n: 1
  ref:
    fsdp:
      enable_full_shard: true
      enable_cpu_offload: true
      enable_rank0_init: true
    offload:
      offload_params: false
  reward:
    reward_type: batch
    reward_function: ./examples/reward_function/math.py:compute_score
trainer:
  total_epochs: 15
  max_steps: null
  project_name: easy_r1
  experiment_name: qwen2_5_7b_math_grpo
  logger: ["console", "wandb"]
  nnodes: 1
  n_gpus_per_node: 8
  max_try_make_batch: 20
  val_freq: 5
  val_before_train: true
  val_only: false
  val_generations_to_log: 3
  save_freq: 5
  save_limit: 3
  save_model_only: false
  save_checkpoint_path: null
  load_checkpoint_path: null
  find_last_checkpoint: true
"""


def test_every_key_of_the_example_is_translated_or_listed():
    tree = yaml.safe_load(EASYR1_EXAMPLE)
    result = convert(tree)
    leaves = set(_leaves(tree))
    assert set(result.translated) | set(result.unmapped) == leaves
    assert not set(result.translated) & set(result.unmapped)
    assert all(rule_for(k) is not None for k in leaves)  # every key of the example is in the table
    assert all(why for why in result.unmapped.values())  # and each untranslated one says why


def test_values_land_on_the_right_keys(tmp_path):
    (tmp_path / "easyr1.yaml").write_text(EASYR1_EXAMPLE)
    assert main(["convert", "easyr1", str(tmp_path / "easyr1.yaml"), "-o", str(tmp_path / "v.yaml")]) == 0
    cfg = load_config(tmp_path / "v.yaml")
    assert (cfg.data.path, cfg.data.eval_path) == ("hiyouga/math12k@train", "hiyouga/math12k@test")
    assert (cfg.data.prompt_key, cfg.data.answer_key, cfg.data.image_key) == ("problem", "answer", "images")
    assert cfg.data.template == "./examples/format_prompt/math.jinja"
    assert (cfg.model.path, cfg.model.min_pixels, cfg.model.max_pixels) == (
        "Qwen/Qwen2.5-7B-Instruct",
        262144,
        4194304,
    )
    assert (cfg.algo.advantage, cfg.algo.kl_estimator, cfg.algo.kl_placement) == ("grpo", "k3", "loss")
    assert cfg.algo.kl_coef == 0.01 and cfg.algo.dynamic_sampling is False
    assert (cfg.train.batch_prompts, cfg.train.minibatches, cfg.train.micro_batch) == (512, 4, 1)
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.grad_clip) == (1e-6, 0.01, 1.0)
    assert cfg.train.gradient_checkpointing is True and cfg.vision.train == "full"
    assert (cfg.rollout.n, cfg.rollout.temperature, cfg.rollout.top_p) == (5, 1.0, 1.0)
    assert (cfg.rollout.engine, cfg.rollout.vllm_gpu_memory_utilization) == ("vllm", 0.6)
    assert cfg.rollout.max_new_tokens == cfg.eval.max_new_tokens == 2048
    assert cfg.reward.weights == {"./examples/reward_function/math.py:compute_score": 1.0}
    assert (cfg.eval.every, cfg.train.save_every, cfg.train.keep_checkpoints) == (5, 5, 3)
    assert cfg.log.run_dir == "runs/easy_r1/qwen2_5_7b_math_grpo" and cfg.log.wandb is True
    header = (tmp_path / "v.yaml").read_text().split("\ndata:")[0]
    assert "#   trainer.total_epochs: vlmrl counts steps" in header
    assert "#   worker.actor.fsdp.enable_full_shard:" in header


def test_disable_kl_unknown_keys_and_bad_values(tmp_path, capsys):
    result = convert({"algorithm": {"disable_kl": True, "kl_coef": 0.1}, "worker": {"new_thing": 1}})
    assert result.config["algo"]["kl_coef"] == 0.0
    assert result.unmapped == {"worker.new_thing": "not a key vlmrl knows from EasyR1's config"}
    (tmp_path / "bad.yaml").write_text("algorithm:\n  adv_estimator: remax\n")
    assert main(["convert", "easyr1", str(tmp_path / "bad.yaml"), "-o", str(tmp_path / "o.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "EasyR1 algorithm.adv_estimator: 'remax' has no vlmrl equivalent; known: [" in err


def test_the_table_targets_real_config_keys():
    from vlmrl.config.load import config_to_dict
    from vlmrl.config.schema import TrainConfig

    keys = set(_leaves(config_to_dict(TrainConfig())))
    targets = {r.target for r in TABLE.values() if r.target}
    assert targets - keys - {"reward.weights"} == set()


def test_a_converted_config_trains(tiny_dir, tmp_path):
    data, pictures = write_own_dataset(tmp_path)
    (tmp_path / "math.py").write_text(EASYR1_REWARD)
    tree = yaml.safe_load(EASYR1_EXAMPLE)
    tree["data"] |= {"train_files": f"{data}@train", "val_files": None, "prompt_key": "question",
                     "answer_key": "solution", "image_key": "image_paths", "image_dir": str(pictures),
                     "format_prompt": None, "max_response_length": 6, "rollout_batch_size": 2,
                     "min_pixels": None, "max_pixels": None}  # fmt: skip
    tree["worker"]["actor"] |= {"global_batch_size": 1, "micro_batch_size_per_device_for_update": 4}
    tree["worker"]["actor"]["model"] |= {"model_path": str(tiny_dir), "enable_gradient_checkpointing": False}
    tree["worker"]["actor"]["optim"]["lr"] = 1e-3
    tree["worker"]["rollout"]["n"] = 4
    tree["worker"]["reward"] |= {"reward_function": f"{tmp_path / 'math.py'}:compute_score",
                                 "reward_function_kwargs": {"format_weight": 1.0}}  # fmt: skip
    tree["trainer"] |= {"max_steps": 1, "save_checkpoint_path": str(tmp_path / "run"), "logger": ["console"]}
    (tmp_path / "easyr1.yaml").write_text(yaml.safe_dump(tree))
    assert main(["convert", "easyr1", str(tmp_path / "easyr1.yaml"), "-o", str(tmp_path / "v.yaml")]) == 0
    cfg = load_config(tmp_path / "v.yaml", overrides=["rollout.engine=hf", "log.progress=false"])
    assert cfg.train.minibatches == 2 and cfg.algo.kl_coef == 0.01  # two optimizer steps, KL in the loss
    metrics = one_step_moves_every_trainable_parameter(GRPOTrainer(cfg))
    assert metrics["reward/compute_score"] == metrics["reward/compute_score/format"]  # format_weight=1.0
