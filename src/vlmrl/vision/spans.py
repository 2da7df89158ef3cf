"""Which completion tokens belong to the ``<look>…</look>`` span (segment-level credit).

The span is the same one the ``perception`` reward reads: the first ``<look>`` and the first
``</look>`` after it, both tags included. A completion without a closed span has no span
tokens. Two ways to find it, one result:

* **tag ids** — when ``<look>`` and ``</look>`` are single tokens (the tiny tokenizer adds them
  as tokens), the span runs from the first open-tag id to the first close-tag id after it;
* **character offsets** — otherwise (a real Qwen tokenizer splits ``<look>`` into ``<``,
  ``look``, ``>``) each token's characters in the decoded text are found by incremental
  decoding, the tags are found in the text, and a token belongs to the span when its characters
  overlap the span's. Incremental decoding is the scheme of TGI / vLLM's detokenizer: token
  ``i``'s text is ``decode(ids[p:i+1])`` minus ``decode(ids[p:r])`` over a short window
  (``p`` = prefix offset, ``r`` = read offset); while the new text ends in U+FFFD (a UTF-8
  character cut in the middle) the token waits, and the tokens that complete a character share
  its characters. Cost: two short decodes per token.

The id path also falls back to offsets for a row whose decoded text holds a span the ids miss
(a sampled ``<``, ``look``, ``>`` instead of the tag token), so both paths agree with the reward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from vlmrl.rewards.perception import LOOK_CLOSE, LOOK_OPEN, look_span


def span_by_ids(ids: Sequence[int], open_id: int, close_id: int) -> tuple[int, int] | None:
    """Token range ``[start, end)`` from the first ``open_id`` through the first ``close_id`` after it.

    >>> span_by_ids([5, 1, 7, 7, 2, 9], open_id=1, close_id=2), span_by_ids([5, 2, 1, 7], 1, 2)
    ((1, 5), None)
    """
    ids = list(ids)
    try:
        start = ids.index(open_id)
        end = ids.index(close_id, start + 1)
    except ValueError:
        return None
    return start, end + 1


def token_char_spans(
    ids: Sequence[int], decode: Callable[[list[int]], str], done: Callable[[str], bool] | None = None
) -> tuple[str, list[tuple[int, int]]]:
    """The decoded text and each token's ``(start, end)`` characters in it (incremental decoding).

    Tokens that complete one multi-byte character together share its range; tokens that never
    produce text (a trailing cut character, a skipped special token) get an empty range at the end.
    ``done(text)`` true stops decoding early (the rest of the tokens get empty ranges at the end).

    >>> vocab = {0: "<lo", 1: "ok>", 2: "hi", 3: "</look>"}
    >>> token_char_spans([0, 1, 2, 3], lambda t: "".join(vocab[i] for i in t))
    ('<look>hi</look>', [(0, 3), (3, 6), (6, 8), (8, 15)])
    """
    ids = list(ids)
    text = ""
    spans: list[tuple[int, int]] = []
    prefix, read = 0, 0
    for i in range(len(ids)):
        before = decode(ids[prefix:read])
        after = decode(ids[prefix : i + 1])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            start = len(text)
            text += after[len(before) :]
            spans.extend([(start, len(text))] * (i + 1 - read))  # tokens read..i made these chars
            prefix, read = read, i + 1
            if done is not None and done(text):
                break
    spans.extend([(len(text), len(text))] * (len(ids) - read))
    return text, spans


def span_by_offsets(text: str, spans: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
    """Token range ``[start, end)`` of the tokens whose characters overlap the look span (tags included).

    >>> span_by_offsets("a<look>x</look>b", [(0, 1), (1, 4), (4, 7), (7, 8), (8, 15), (15, 16)])
    (1, 5)
    """
    a = text.find(LOOK_OPEN)
    if a < 0:
        return None
    b = text.find(LOOK_CLOSE, a + len(LOOK_OPEN))
    if b < 0:
        return None
    b += len(LOOK_CLOSE)
    inside = [i for i, (s, e) in enumerate(spans) if s < b and max(e, s + 1) > a]
    return (inside[0], inside[-1] + 1) if inside else None


def _has_span(text: str) -> bool:
    return look_span(text) is not None


def single_token_id(tokenizer, tag: str) -> int | None:
    """The id of ``tag`` when the tokenizer encodes it as exactly one token, else None."""
    ids = tokenizer(tag, add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 else None


def look_span_mask(
    completion_ids: torch.Tensor,  # [N, C] long
    lengths: torch.Tensor,  # [N] long, valid tokens per row
    tokenizer,
    texts: Sequence[str] | None = None,
) -> torch.Tensor:
    """``[N, C]`` float mask, 1 on the tokens of each completion's look span (tags included).

    ``texts`` (the decoded completions, as the rewards saw them) lets rows without a span skip
    all decoding; without it every row without tag ids is decoded.
    """
    n, width = completion_ids.shape
    mask = torch.zeros((n, width), dtype=torch.float32)
    open_id, close_id = single_token_id(tokenizer, LOOK_OPEN), single_token_id(tokenizer, LOOK_CLOSE)

    def decode(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    for row in range(n):
        if texts is not None and look_span(texts[row]) is None:
            continue
        ids = completion_ids[row, : int(lengths[row])].tolist()
        span = None
        if open_id is not None and close_id is not None:
            span = span_by_ids(ids, open_id, close_id)
        if span is None:
            span = span_by_offsets(*token_char_spans(ids, decode, _has_span))
        if span is not None:
            mask[row, span[0] : span[1]] = 1.0
    return mask
