"""RL for visual generation: a small flow-matching generator, programmatic rewards, Flow-GRPO / DDPO."""
