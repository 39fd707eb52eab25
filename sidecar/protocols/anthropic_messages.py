"""Anthropic Messages (`POST /v1/messages` and `/v1/messages/count_tokens`), JSON and streamed.

Scanned: `system` (a string or text blocks), `text` blocks and their
citations, `document` blocks with a plain-text or content source (and their
`title` and `context`), `search_result` blocks, the string leaves of
`tool_use.input`, and `tool_result.content`. Block types without a field-by-field rule, such as
server tool results, have every string leaf scanned except identifiers,
signatures and encoded data (`OPAQUE_KEYS`).

Passed on unchanged, so PII inside them reaches the provider: `image` blocks
and `document` blocks with a base64, URL or file source (their bytes are not
inspected), and `thinking` and `redacted_thinking` blocks, whose signatures
cover their text. For the same reason thinking text in a response keeps its
placeholders. Sent back in a later turn, it matches that turn's numbering as
long as the conversation is resent from its start.
"""

from __future__ import annotations

import json
from typing import Any

from sidecar.errors import InvalidBody
from sidecar.protocols.base import (
    JSON,
    OPAQUE_KEYS,
    Adapter,
    Part,
    RequestTexts,
    StreamTransformer,
    add_text_or_objects,
    collect_request_fields,
    expect_list,
    expect_object,
    require,
    restore_string_leaves,
)
from sidecar.redact.restore import Restorer, StreamRestorer, json_string_escape, no_escape
from sidecar.sse import Event

_ROLE_PARTS = {"user": Part.USER, "assistant": Part.ASSISTANT}
_PASSED_BLOCKS = frozenset({"image", "thinking", "redacted_thinking", "container_upload"})
_TOOL_CALL_BLOCKS = frozenset({"tool_use", "server_tool_use"})
# Anthropic's error `type` per HTTP status; other statuses use invalid_request_error below 500.
_ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_error_body(status: int, code: str, message: str) -> dict[str, Any]:
    """Return an error body in Anthropic's format, with the sidecar's `code` as an extra field."""
    error_type = _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": error_type, "message": message, "code": code}}


def anthropic_usage(usage: JSON) -> dict[str, int] | None:
    """Return audit token counts from an Anthropic `usage` object.

    Anthropic's `input_tokens` leaves out cache reads and writes, so they are
    added back: the audit's `input_tokens` counts every input token.
    """
    if not isinstance(usage, dict):
        return None
    counts: dict[str, int] = {}
    cached = usage.get("cache_read_input_tokens")
    written = usage.get("cache_creation_input_tokens")
    if isinstance(usage.get("input_tokens"), int):
        extra = [value for value in (cached, written) if isinstance(value, int)]
        counts["input_tokens"] = usage["input_tokens"] + sum(extra)
    if isinstance(usage.get("output_tokens"), int):
        counts["output_tokens"] = usage["output_tokens"]
    if isinstance(cached, int):
        counts["cached_tokens"] = cached
    if isinstance(written, int):
        counts["cache_write_tokens"] = written
    return counts or None


class AnthropicMessagesAdapter(Adapter):
    dialect = "anthropic.messages"

    def collect(self, body: dict[str, Any]) -> RequestTexts:
        texts = RequestTexts()
        _collect_system(texts, body)
        messages = expect_list(
            body.get("messages"), "'messages' must be an array of message objects"
        )
        for index, item in enumerate(messages):
            where = f"messages[{index}]"
            message = expect_object(item, f"{where} must be an object")
            role = message.get("role")
            part = _ROLE_PARTS.get(role) if isinstance(role, str) else None
            require(part is not None, f"{where}.role {role!r} must be 'user' or 'assistant'")
            assert part is not None
            _collect_content(texts, message, "content", part, where)
        # metadata.user_id is often an email address.
        collect_request_fields(texts, body, ("metadata", "stop_sequences"), ("tools",))
        return texts

    def restore_body(self, body: JSON, restorer: Restorer) -> None:
        if not isinstance(body, dict):
            return
        if body.get("type") == "error":
            restore_string_leaves(body.get("error"), restorer)
            return
        restore_message(body, restorer)

    def stream_transformer(self, restorer: Restorer) -> StreamTransformer:
        return MessagesStreamTransformer(restorer)

    def error_body(self, status: int, code: str, message: str) -> dict[str, Any]:
        return anthropic_error_body(status, code, message)

    def usage(self, document: JSON) -> dict[str, int] | None:
        return anthropic_usage(document.get("usage")) if isinstance(document, dict) else None


def _collect_system(texts: RequestTexts, body: dict[str, Any]) -> None:
    system = body.get("system")
    if system is None or isinstance(system, str):
        if system is not None:
            texts.add(body, "system", Part.SYSTEM)
        return
    blocks = expect_list(system, "'system' must be a string or an array of text blocks")
    for index, item in enumerate(blocks):
        block = expect_object(item, f"system[{index}] must be an object")
        require(block.get("type") == "text", f"system[{index}].type must be 'text'")
        _add_string(texts, block, "text", Part.SYSTEM, f"system[{index}]")


def _collect_content(
    texts: RequestTexts, container: dict[str, Any], key: str, part: Part, where: str
) -> None:
    """Collect `container[key]`: a string, or an array of content blocks."""
    for block_where, block in add_text_or_objects(texts, container, key, part, where, "blocks"):
        _collect_block(texts, block, part, block_where)


def _collect_block(texts: RequestTexts, block: dict[str, Any], part: Part, where: str) -> None:
    block_type = block.get("type")
    if not isinstance(block_type, str):
        raise InvalidBody(f"{where}.type must be a string")
    if block_type in _PASSED_BLOCKS:
        return
    if block_type == "text":
        _add_string(texts, block, "text", part, where)
        # Restored responses put values back into `cited_text`, so a resent turn carries them.
        if block.get("citations") is not None:
            texts.add_json_strings(block["citations"], part, OPAQUE_KEYS)
    elif block_type == "document":
        _collect_document(texts, block, part, where)
    elif block_type == "search_result":
        _add_optional_string(texts, block, "title", part, where)
        _collect_content(texts, block, "content", part, where)
    elif block_type in _TOOL_CALL_BLOCKS:
        tool_input = expect_object(block.get("input"), f"{where}.input must be a JSON object")
        texts.add_json_strings(tool_input, Part.TOOL_ARGUMENTS)
    elif block_type == "tool_result":
        if block.get("content") is not None:
            _collect_content(texts, block, "content", Part.TOOL_RESULTS, where)
    else:
        generic_part = Part.TOOL_RESULTS if block_type.endswith("_result") else part
        texts.add_json_strings(block, generic_part, OPAQUE_KEYS)


def _collect_document(texts: RequestTexts, block: dict[str, Any], part: Part, where: str) -> None:
    _add_optional_string(texts, block, "title", part, where)
    _add_optional_string(texts, block, "context", part, where)
    source = expect_object(block.get("source"), f"{where}.source must be an object")
    if source.get("type") == "text":
        _add_string(texts, source, "data", part, f"{where}.source")
    elif source.get("type") == "content":
        _collect_content(texts, source, "content", part, f"{where}.source")


def _add_string(
    texts: RequestTexts, container: dict[str, Any], key: str, part: Part, where: str
) -> None:
    require(isinstance(container.get(key), str), f"{where}.{key} must be a string")
    texts.add(container, key, part)


def _add_optional_string(
    texts: RequestTexts, container: dict[str, Any], key: str, part: Part, where: str
) -> None:
    if container.get(key) is not None:
        _add_string(texts, container, key, part, where)


def restore_message(message: dict[str, Any], restorer: Restorer) -> None:
    """Restore the content blocks of a `message` object, in place."""
    content = message.get("content")
    if isinstance(content, list):
        for block in content:
            if isinstance(block, dict):
                restore_block(block, restorer)


def restore_block(block: dict[str, Any], restorer: Restorer) -> None:
    """Restore one response content block; thinking blocks stay as they are."""
    block_type = block.get("type")
    if block_type in _PASSED_BLOCKS:
        return
    if block_type == "text":
        if isinstance(block.get("text"), str):
            block["text"] = restorer.restore(block["text"])
        _restore_citations(block.get("citations"), restorer)
    elif block_type in _TOOL_CALL_BLOCKS:
        restore_string_leaves(block.get("input"), restorer)
    else:
        restore_string_leaves(block, restorer, OPAQUE_KEYS)


def _restore_citations(citations: JSON, restorer: Restorer) -> None:
    for citation in citations if isinstance(citations, list) else []:
        if isinstance(citation, dict) and isinstance(citation.get("cited_text"), str):
            citation["cited_text"] = restorer.restore(citation["cited_text"])


class MessagesStreamTransformer(StreamTransformer):
    """Restores Anthropic stream events per content block index.

    `text_delta` and `input_json_delta` fragments go through one stream
    restorer per block. Text a block still holds back is sent in one extra
    `content_block_delta` event just before that block's `content_block_stop`,
    or before `message_delta`, `message_stop` or `error` for a block that was
    never stopped. `thinking_delta` and `signature_delta` pass unchanged.
    """

    def __init__(self, restorer: Restorer) -> None:
        self._restorer = restorer
        # Per block index: the delta type its held text is sent as, and its restorer.
        self._streams: dict[int, tuple[str, StreamRestorer]] = {}
        self._raw_usage: dict[str, Any] = {}

    def feed(self, event: Event) -> list[Event]:
        try:
            payload = json.loads(event.data)
        except ValueError:
            if not event.data:
                return [event]
            return [event.with_data(self._restorer.restore(event.data))]
        if not isinstance(payload, dict):
            return [event]

        kind = payload.get("type", event.event)
        if kind == "ping":
            return [event]
        if kind == "content_block_stop":
            return [*self._flush(payload.get("index")), event]
        before: list[Event] = []
        if kind in ("message_delta", "message_stop", "error"):
            before = self._flush_all()
        if not self._restore_payload(kind, payload):
            return [*before, event]
        return [*before, event.with_data(json.dumps(payload, ensure_ascii=False))]

    def end(self) -> list[Event]:
        return self._flush_all()

    def error_events(self, message: str) -> list[Event]:
        body = anthropic_error_body(502, "upstream_stream_failed", message)
        return [Event(event="error", data=json.dumps(body), modified=True)]

    def is_error(self, event: Event) -> bool:
        return event.event == "error"

    def _restore_payload(self, kind: object, payload: dict[str, Any]) -> bool:
        """Restore one event's payload in place; return False if the event passes unchanged."""
        if kind == "message_start":
            message = payload.get("message")
            if isinstance(message, dict):
                restore_message(message, self._restorer)
                self._add_usage(message.get("usage"))
        elif kind == "content_block_start":
            self._start_block(payload.get("index"), payload.get("content_block"))
        elif kind == "content_block_delta":
            return self._restore_delta(payload.get("index"), payload.get("delta"))
        elif kind == "message_delta":
            self._add_usage(payload.get("usage"))
            return False
        elif kind == "message_stop":
            return False
        else:
            # `error` and event types this transformer does not know.
            restore_string_leaves(payload, self._restorer, OPAQUE_KEYS)
        return True

    def _start_block(self, index: object, block: JSON) -> None:
        if not isinstance(index, int) or not isinstance(block, dict):
            return
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            block["text"] = self._stream(index, "text_delta").feed(block["text"])
            _restore_citations(block.get("citations"), self._restorer)
        else:
            restore_block(block, self._restorer)

    def _restore_delta(self, index: object, delta: JSON) -> bool:
        if not isinstance(index, int) or not isinstance(delta, dict):
            return False
        delta_type = delta.get("type")
        field = {"text_delta": "text", "input_json_delta": "partial_json"}.get(str(delta_type))
        if field is not None and isinstance(delta.get(field), str):
            delta[field] = self._stream(index, str(delta_type)).feed(delta[field])
            return True
        if delta_type == "citations_delta":
            citation = delta.get("citation")
            _restore_citations([citation], self._restorer)
            return True
        # thinking_delta and signature_delta: the signature covers the thinking text.
        return False

    def _stream(self, index: int, delta_type: str) -> StreamRestorer:
        entry = self._streams.get(index)
        if entry is None:
            escape = json_string_escape if delta_type == "input_json_delta" else no_escape
            entry = (delta_type, self._restorer.stream(escape))
            self._streams[index] = entry
        return entry[1]

    def _flush(self, index: object) -> list[Event]:
        entry = self._streams.pop(index, None) if isinstance(index, int) else None
        if entry is None:
            return []
        delta_type, stream = entry
        held = stream.flush()
        if not held:
            return []
        field = "text" if delta_type == "text_delta" else "partial_json"
        delta = {"type": delta_type, field: held}
        payload = {"type": "content_block_delta", "index": index, "delta": delta}
        data = json.dumps(payload, ensure_ascii=False)
        return [Event(event="content_block_delta", data=data, modified=True)]

    def _flush_all(self) -> list[Event]:
        return [event for index in sorted(self._streams) for event in self._flush(index)]

    def _add_usage(self, usage: JSON) -> None:
        # message_delta repeats cumulative counts and leaves out those that do not apply.
        if isinstance(usage, dict):
            reported = {key: value for key, value in usage.items() if value is not None}
            self._raw_usage.update(reported)
            self.usage = anthropic_usage(self._raw_usage)
