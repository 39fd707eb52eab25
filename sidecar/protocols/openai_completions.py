"""OpenAI legacy completions (`POST /v1/completions`), JSON and streamed.

Scanned: `prompt` as a string or an array of strings, and `suffix`. A prompt
of token ids cannot be scanned, so it is rejected. Restored: `choices[].text`.
Token strings in `logprobs` keep their placeholder pieces, because a
placeholder spans several tokens.
"""

from __future__ import annotations

import json
from typing import Any

from sidecar.errors import InvalidBody
from sidecar.protocols.base import (
    JSON,
    Adapter,
    Part,
    RequestTexts,
    StreamTransformer,
    collect_request_fields,
    restore_string_leaves,
)
from sidecar.protocols.openai_chat import ChoiceStreamTransformer, openai_error_body
from sidecar.redact.restore import Restorer, StreamRestorer
from sidecar.sse import Event


def collect_strings(body: dict[str, Any], key: str, texts: RequestTexts, part: Part) -> None:
    """Collect `body[key]` as a string or an array of strings; reject token ids.

    Legacy completions and embeddings take text in the same shapes.
    """
    value = body.get(key)
    if isinstance(value, str):
        texts.add(body, key, part)
        return
    if not isinstance(value, list):
        raise InvalidBody(f"'{key}' must be a string or an array of strings")
    for index, item in enumerate(value):
        if isinstance(item, str):
            texts.add(value, index, part)
        elif isinstance(item, int) or (
            isinstance(item, list) and not any(isinstance(x, str) for x in item)
        ):
            raise InvalidBody(
                f"'{key}' contains token ids, which cannot be scanned for PII; send the text as "
                "a string or an array of strings"
            )
        else:
            raise InvalidBody(f"{key}[{index}] must be a string")


class OpenAICompletionsAdapter(Adapter):
    dialect = "openai.completions"

    def collect(self, body: dict[str, Any]) -> RequestTexts:
        texts = RequestTexts()
        collect_strings(body, "prompt", texts, Part.USER)
        suffix = body.get("suffix")
        if isinstance(suffix, str):
            texts.add(body, "suffix", Part.USER)
        elif suffix is not None:
            raise InvalidBody("'suffix' must be a string")
        collect_request_fields(texts, body, ("user", "metadata", "stop"))
        return texts

    def restore_body(self, body: JSON, restorer: Restorer) -> None:
        if not isinstance(body, dict):
            return
        for choice in body.get("choices") or []:
            if isinstance(choice, dict) and isinstance(choice.get("text"), str):
                choice["text"] = restorer.restore(choice["text"])
        if isinstance(body.get("error"), dict):
            restore_string_leaves(body["error"], restorer)

    def stream_transformer(self, restorer: Restorer) -> StreamTransformer:
        return CompletionsStreamTransformer(restorer)

    def error_body(self, status: int, code: str, message: str) -> dict[str, Any]:
        return openai_error_body(status, code, message)


class CompletionsStreamTransformer(ChoiceStreamTransformer):
    """Restores `text_completion` chunks per choice index.

    A choice's held-back text goes out in the chunk that carries its
    `finish_reason`. Text still held when a usage-only chunk, `[DONE]` or the
    end of the stream arrives goes out in one extra chunk before it.
    """

    def __init__(self, restorer: Restorer) -> None:
        super().__init__(restorer)
        self._streams: dict[int, StreamRestorer] = {}

    def _restore_choice(self, choice: dict[str, Any]) -> None:
        index = choice.get("index", 0)
        if not isinstance(index, int):
            return
        stream = self._streams.get(index)
        if stream is None:
            stream = self._streams[index] = self._restorer.stream()
        text = choice.get("text")
        restored = stream.feed(text) if isinstance(text, str) else ""
        if choice.get("finish_reason") is not None:
            restored += stream.flush()
            del self._streams[index]
        if isinstance(text, str) or restored:
            choice["text"] = restored

    def _flush_all(self) -> list[Event]:
        choices = []
        for index, stream in sorted(self._streams.items()):
            held = stream.flush()
            if held:
                choices.append(
                    {"text": held, "index": index, "logprobs": None, "finish_reason": None}
                )
        self._streams.clear()
        if not choices:
            return []
        chunk: dict[str, Any] = {
            key: self._last_chunk[key]
            for key in ("id", "object", "created", "model")
            if key in self._last_chunk
        }
        chunk["choices"] = choices
        return [Event(data=json.dumps(chunk, ensure_ascii=False), modified=True)]
