"""The names of ``vlmrl doctor``'s checks and what each verifies: one list for the table's order
(:func:`vlmrl.eval.doctor.run_doctor`) and for ``vlmrl doctor --help``. Imports nothing heavy, so
the CLI's parser can read it without loading torch."""

from __future__ import annotations

CHECKS: dict[str, str] = {
    "image tokens": "image tokens written by the processor = vision features (prod(grid)/merge²), "
    "at several image sizes and the dataset's own, and for a 4-frame video; the model's prefill runs",
    "log-prob gap": "sampler log-probs vs the training forward's on the same completions: ratio 1 "
    "within 1e-3, over text prompts and over tokens after images",
    "tool images": "the chat template keeps images inside tool messages (multi-turn tools), and "
    "their tokens match their features",
    "boxes": "grounding boxes are pixels of their image, and survive the processor's resize "
    "(pixel / normalised / 0-1000)",
    "memory": "per-GPU estimate: weights, gradients, optimizer, activations, KV cache, "
    "reference, vLLM share; advice when it does not fit",
}
