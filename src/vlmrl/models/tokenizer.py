"""A small byte-level BPE tokenizer with Qwen2.5-VL's special tokens and a Qwen-style chat template.

Why train one here: no hub is reachable, and the tiny model learns faster with a vocabulary
that fits its tasks (a few hundred merges, every digit its own token, the response tags as
single tokens). It is byte-level, so any string, however hostile, still tokenizes.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

#: Qwen2.5-VL's special tokens, in Qwen's order. The vision ones must never be sampled.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

#: Vision tokens a rollout must never contain (docs/facts.md: a sampled ``<|image_pad|>``
#: makes the training forward fail with "Image features and image tokens do not match").
VISION_SPECIAL_TOKENS = (
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

#: Response-format tags kept as single, non-special tokens: decoding keeps them, rewards read them.
TAG_TOKENS = (
    "<look>",
    "</look>",
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
)

#: Qwen-style ChatML template: images become ``<|vision_start|><|image_pad|><|vision_end|>`` and
#: videos ``<|vision_start|><|video_pad|><|vision_end|>``, which the processor expands to one pad
#: per merged patch (per temporal patch of frames, for a video).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'video' or 'video' in part %}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_BASE_CORPUS = """
How many red circles are there? How many blue squares are in the image? Count the green triangles.
What colour is the square? What color is the shape? red green blue yellow purple orange black white gray
Where is the circle? top-left top-right bottom-left bottom-right left right above below center middle
Is the red circle left of the blue square? Is there a green triangle in the image? yes no Yes No
Which bar is the largest? What is the value of bar A? What is the sum of B and C? chart bar value axis
In the triangle, angle A is 50 degrees and angle B is 60 degrees. What is angle C? degrees
The rectangle has sides 3 and 4. What is its perimeter? What is its area? side length width height
Give the bounding box of the yellow star as [x1, y1, x2, y2]. box object image picture scene
circle circles square squares triangle triangles star stars shape shapes object objects the a an of in
You first think about the reasoning process and then give the final answer. Answer with the number.
Put the final answer in <answer> </answer> tags. First describe what you see in <look> </look>.
<think> I see 3 red circles and 2 blue squares, so the answer is 3. </think> <answer>3</answer>
\\boxed{12} \\frac{1}{2} 0.5 1/2 + - * / = ( ) [ ] { } , . : ; ? ! ' " % ° # @ & _
crop zoom rotate measure calculate tool call response arguments name x y angle distance
0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 25 30 40 45 50 60 70 80 90 100 112 180 224 360
"""


def train_tokenizer(extra_texts: Iterable[str] = (), vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Train the byte-level BPE on the task vocabulary (plus ``extra_texts``) and wrap it for transformers.

    Digits are split one per token (``Digits(individual_digits=True)``) so numbers compose
    from ten embeddings instead of hundreds of rarely-seen merges.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(QWEN_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [line for line in _BASE_CORPUS.splitlines() if line.strip()] + list(extra_texts)
    tok.train_from_iterator(corpus * 4, trainer=trainer)
    tok.add_tokens(list(TAG_TOKENS))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        model_max_length=4096,
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
    )
    return fast
