"""Evaluation: held-out accuracy by task (greedy decoding)."""
