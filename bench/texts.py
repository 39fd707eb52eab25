"""Prompts and request bodies of the benchmark, built from the labelled corpus.

The corpus in tests/data/corpus contains synthetic PII only. Every prompt starts
with a line that numbers it, so two prompts never share a text and every
request that should miss the findings cache does.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

CORPUS_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "corpus"
MODEL = "gpt-fake"
# About 500 characters without personal data, for the pass-through scenario.
PLAIN_PROMPT = (
    "Summarise the trade-offs between optimistic and pessimistic locking in a relational "
    "database. Cover throughput under low and high contention, the failure modes each one "
    "has when a transaction runs long, how retries interact with idempotent writes, and "
    "which isolation levels make each approach necessary. Keep the answer under two hundred "
    "words, use plain prose without lists, and end with one sentence on when a queue is the "
    "better tool than either kind of lock for serialising updates to one row."
)


@cache
def corpus_texts(name: str) -> tuple[str, ...]:
    lines = (CORPUS_DIR / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    return tuple(json.loads(line)["text"] for line in lines if line.strip())


def pii_prompt(number: int, size: int) -> str:
    """Return prompt `number`: corpus texts with PII from a rotating start, cut to `size`."""
    texts = corpus_texts("pii")
    parts = [f"Request {number}: please review the notes below."]
    length = len(parts[0])
    index = number
    while length < size:
        text = texts[index % len(texts)]
        parts.append(text)
        length += len(text) + 2
        index += 1
    return cut("\n\n".join(parts), size)


def mixed_prompt(number: int, size: int) -> str:
    """Return a long prompt of corpus prose and technical texts (code, logs, SQL), cut to `size`."""
    prose, technical = corpus_texts("pii"), corpus_texts("technical")
    parts = [f"Request {number}: find the cause of the failure in the material below."]
    length = len(parts[0])
    index = number
    while length < size:
        for text in (prose[index % len(prose)], technical[index % len(technical)]):
            parts.append(text)
            length += len(text) + 2
        index += 1
    return cut("\n\n".join(parts), size)


def cut(text: str, size: int) -> str:
    """Return `text` cut to at most `size` characters, at a space when one is near."""
    if len(text) <= size:
        return text
    space = text.rfind(" ", 0, size)
    return text[: space if space > size // 2 else size]


def chat_body(messages: list[dict[str, str]], stream: bool = False) -> str:
    body: dict[str, Any] = {"model": MODEL, "messages": messages}
    if stream:
        body["stream"] = True
    return json.dumps(body, ensure_ascii=False)


def user_body(prompt: str, stream: bool = False) -> str:
    return chat_body([{"role": "user", "content": prompt}], stream)


def conversation(number: int, turn: int, replies: list[str], size: int) -> list[dict[str, str]]:
    """Return the messages of `turn` (from 1) of conversation `number`: a system prompt, then turns.

    `replies` are the assistant contents of the earlier turns, as the client
    received them; a chat client resends them with the history.
    """
    messages = [{"role": "system", "content": "You are a support assistant. Answer briefly."}]
    for earlier in range(1, turn + 1):
        messages.append({"role": "user", "content": pii_prompt(number * 100 + earlier, size)})
        if earlier < turn:
            messages.append({"role": "assistant", "content": replies[earlier - 1]})
    return messages
