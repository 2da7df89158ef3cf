"""Chat messages of an episode and the ids of an environment turn.

An environment turn's ids are what the processor gives for the chat template's rendering of that
user turn in that place (:func:`env_segment_text`)::

    "\\n<|im_start|>user\\n" + content (image placeholders expanded) + "<|im_end|>\\n<|im_start|>assistant\\n"

(the text the chat template appends after the previous assistant message; tokenized alone it
gives the same ids as in the full string, since it starts right after the special
``<|im_end|>``). So a multi-turn sequence is built by concatenating ids, never by re-tokenizing
decoded text.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

IMAGE_PLACEHOLDER = "<image>"


def user_content(text: str, n_images: int) -> list[dict[str, Any]]:
    """HF chat content for an observation: text split at ``<image>``, images in order.

    Placeholders missing from the text go after it (one per image), extra ones are an error.
    """
    pieces = text.split(IMAGE_PLACEHOLDER)
    if len(pieces) - 1 > n_images:
        raise ValueError(f"observation has {len(pieces) - 1} <image> placeholders but {n_images} images")
    content: list[dict[str, Any]] = []
    for i, piece in enumerate(pieces):
        if i > 0:
            content.append({"type": "image"})
        if piece:
            content.append({"type": "text", "text": piece})
    content += [{"type": "image"}] * (n_images - (len(pieces) - 1))
    return content


def initial_messages(env, observation) -> list[dict]:
    """The system turn (the env's tool descriptions) and the first user turn."""
    msgs: list[dict] = []
    system = env.system_prompt()
    if system:
        msgs.append({"role": "system", "content": [{"type": "text", "text": system}]})
    msgs.append({"role": "user", "content": user_content(observation.text, len(observation.images))})
    return msgs


def env_segment_text(processor, messages: list[dict], observation) -> str:
    """The template's text for a user turn following ``messages`` (whose last turn is the model's).

    Rendered as the difference of two chat-template renderings, so it is whatever the model's
    template writes there; the leading ``\\n`` after the model's ``<|im_end|>`` belongs to it.
    """
    user = {"role": "user", "content": user_content(observation.text, len(observation.images))}
    before = processor.apply_chat_template(messages, add_generation_prompt=False, tokenize=False)
    after = processor.apply_chat_template([*messages, user], add_generation_prompt=True, tokenize=False)
    if not after.startswith(before) or not before.endswith("<|im_end|>\n"):
        raise ValueError("the chat template does not render turns as a prefix-stable <|im_end|>-closed list")
    return "\n" + after[len(before) :]


def encode_segment(processor, text: str, images: list[Image.Image]) -> dict[str, torch.Tensor]:
    """Processor outputs for an environment segment (no padding, one row)."""
    enc = processor(text=[text], images=images or None, return_tensors="pt")
    return {k: v for k, v in enc.items() if isinstance(v, torch.Tensor)}
