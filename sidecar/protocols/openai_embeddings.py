"""OpenAI embeddings (`POST /v1/embeddings`).

`input` as a string or an array of strings is redacted with the same
placeholders as any other request. An input of token ids cannot be scanned,
so it is rejected. A response contains only vectors, so nothing is restored
except the message of an error body.
"""

from __future__ import annotations

import json
from typing import Any

from sidecar.protocols.base import (
    JSON,
    Adapter,
    Part,
    RequestTexts,
    StreamTransformer,
    collect_request_fields,
    restore_string_leaves,
)
from sidecar.protocols.openai_chat import openai_error_body
from sidecar.protocols.openai_completions import collect_strings
from sidecar.redact.restore import Restorer
from sidecar.sse import Event


class OpenAIEmbeddingsAdapter(Adapter):
    dialect = "openai.embeddings"

    def collect(self, body: dict[str, Any]) -> RequestTexts:
        texts = RequestTexts()
        collect_strings(body, "input", texts, Part.USER)
        collect_request_fields(texts, body, ("user",))
        return texts

    def restore_body(self, body: JSON, restorer: Restorer) -> None:
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            restore_string_leaves(body["error"], restorer)

    def stream_transformer(self, restorer: Restorer) -> StreamTransformer:
        return _PlainStreamTransformer(restorer)

    def error_body(self, status: int, code: str, message: str) -> dict[str, Any]:
        return openai_error_body(status, code, message)

    def is_stream(self, body: dict[str, Any]) -> bool:
        return False


class _PlainStreamTransformer(StreamTransformer):
    """Restores complete placeholders in each event; embeddings are not streamed by OpenAI."""

    def __init__(self, restorer: Restorer) -> None:
        self._restorer = restorer

    def feed(self, event: Event) -> list[Event]:
        try:
            document = json.loads(event.data)
        except ValueError:
            restored = self._restorer.restore(event.data)
            return [event if restored == event.data else event.with_data(restored)]
        restore_string_leaves(document, self._restorer)
        return [event.with_data(json.dumps(document, ensure_ascii=False))]

    def end(self) -> list[Event]:
        return []
