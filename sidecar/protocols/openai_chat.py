"""OpenAI chat completions (`POST /v1/chat/completions`), JSON and streamed."""

from __future__ import annotations

import json
from abc import abstractmethod
from typing import Any

from sidecar.errors import InvalidBody
from sidecar.protocols.base import (
    JSON,
    Adapter,
    Part,
    RequestTexts,
    StreamTransformer,
    collect_request_fields,
    openai_usage,
    require,
    restore_string_leaves,
)
from sidecar.redact.restore import Restorer, StreamRestorer, json_string_escape
from sidecar.sse import Event

_ROLE_PARTS = {
    "system": Part.SYSTEM,
    "developer": Part.SYSTEM,
    "user": Part.USER,
    "assistant": Part.ASSISTANT,
    "tool": Part.TOOL_RESULTS,
    "function": Part.TOOL_RESULTS,
}
# Content part types with text the model reads; image, audio and file parts pass untouched.
# A part of any other type has every string leaf scanned but its `type`.
_TEXT_PART_FIELDS = {"text": "text", "refusal": "refusal"}
_BINARY_PART_TYPES = frozenset({"image_url", "input_audio", "file"})
# Message fields besides `content` that carry text: the model reads a sender's
# `name`, and earlier replies' `refusal` and `reasoning_content`.
_MESSAGE_TEXT_FIELDS = ("name", "refusal", "reasoning_content")
# Top-level fields a client fills with free text the provider stores or the
# model reads: end-user ids, metadata and stop words, then tool definitions.
_REQUEST_TEXT_FIELDS = ("user", "safety_identifier", "metadata", "stop")
_REQUEST_SCHEMA_FIELDS = ("tools", "functions", "response_format")


def openai_error_body(status: int, code: str, message: str) -> dict[str, Any]:
    error_type = "invalid_request_error" if status < 500 else "api_error"
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


class OpenAIChatAdapter(Adapter):
    dialect = "openai.chat"

    def collect(self, body: dict[str, Any]) -> RequestTexts:
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise InvalidBody("'messages' must be an array of message objects")
        texts = RequestTexts()
        for index, message in enumerate(messages):
            require(isinstance(message, dict), f"messages[{index}] must be an object")
            role = message.get("role")
            part = _ROLE_PARTS.get(role) if isinstance(role, str) else None
            require(part is not None, f"messages[{index}].role {role!r} is not a known role")
            assert part is not None
            _collect_content(texts, message, part, f"messages[{index}]")
            for field in _MESSAGE_TEXT_FIELDS:
                if field in message:
                    texts.add(message, field, part)
            _collect_tool_calls(texts, message, f"messages[{index}]")
        prediction = body.get("prediction")
        if isinstance(prediction, dict) and "content" in prediction:
            _collect_content(texts, prediction, Part.USER, "prediction")
        collect_request_fields(texts, body, _REQUEST_TEXT_FIELDS, _REQUEST_SCHEMA_FIELDS)
        return texts

    def restore_body(self, body: JSON, restorer: Restorer) -> None:
        if not isinstance(body, dict):
            return
        for choice in body.get("choices") or []:
            message = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(message, dict):
                _restore_message(message, restorer)
        if "error" in body:
            restore_string_leaves(body["error"], restorer)

    def stream_transformer(self, restorer: Restorer) -> StreamTransformer:
        return ChatStreamTransformer(restorer)

    def reply_texts(self, document: JSON) -> list[str]:
        choices = document.get("choices") if isinstance(document, dict) else None
        texts = []
        for choice in choices if isinstance(choices, list) else []:
            message = choice.get("message") if isinstance(choice, dict) else None
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str) and content:
                texts.append(content)
        return texts

    def error_body(self, status: int, code: str, message: str) -> dict[str, Any]:
        return openai_error_body(status, code, message)


def _collect_content(texts: RequestTexts, message: dict[str, Any], part: Part, where: str) -> None:
    content = message.get("content")
    if content is None or isinstance(content, str):
        if content is not None:
            texts.add(message, "content", part)
        return
    require(isinstance(content, list), f"{where}.content must be a string or an array of parts")
    for index, item in enumerate(content):
        require(isinstance(item, dict), f"{where}.content[{index}] must be an object")
        part_type = item.get("type")
        if part_type in _BINARY_PART_TYPES:
            continue
        field = _TEXT_PART_FIELDS.get(part_type) if isinstance(part_type, str) else None
        if field is None or field not in item:
            # An unknown, misspelt or missing type: scan everything it holds.
            texts.add_json_strings(item, part, skip=frozenset({"type"}))
            continue
        require(isinstance(item[field], str), f"{where}.content[{index}].{field} must be a string")
        texts.add(item, field, part)


def _collect_tool_calls(texts: RequestTexts, message: dict[str, Any], where: str) -> None:
    calls = message.get("tool_calls")
    require(calls is None or isinstance(calls, list), f"{where}.tool_calls must be an array")
    functions = [call.get("function") if isinstance(call, dict) else call for call in calls or []]
    if "function_call" in message:
        functions.append(message["function_call"])
    for function in functions:
        if function is None:
            continue
        require(isinstance(function, dict), f"{where}: a tool call's function must be an object")
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            texts.add_json_text(function, "arguments", Part.TOOL_ARGUMENTS)
        else:
            texts.add_json_strings(arguments, Part.TOOL_ARGUMENTS)


def _restore_message(message: dict[str, Any], restorer: Restorer) -> None:
    for key, value in message.items():
        if key in ("tool_calls", "function_call"):
            continue
        if isinstance(value, str):
            message[key] = restorer.restore(value)
        else:
            restore_string_leaves(value, restorer)
    calls = list(message.get("tool_calls") or [])
    if isinstance(message.get("function_call"), dict):
        calls.append({"function": message["function_call"]})
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            function["arguments"] = restorer.restore(function["arguments"], json_string_escape)


def is_openai_error_event(event: Event) -> bool:
    """Return whether an event has a top-level `error` object, as a failed OpenAI stream sends."""
    if '"error"' not in event.data:
        return False
    try:
        chunk = json.loads(event.data)
    except ValueError:
        return False
    return isinstance(chunk, dict) and isinstance(chunk.get("error"), dict)


class ChoiceStreamTransformer(StreamTransformer):
    """Restores OpenAI chunk streams whose events carry `choices`, chat or legacy completions.

    Subclasses restore one choice (`_restore_choice`) and put the text that
    all choices still hold back into one extra chunk (`_flush_all`). This
    class walks the events, sends that chunk before a usage-only or error
    chunk and before `[DONE]`, and records usage.
    """

    def __init__(self, restorer: Restorer) -> None:
        self._restorer = restorer
        self._last_chunk: dict[str, Any] = {}

    def feed(self, event: Event) -> list[Event]:
        if event.data.strip() == "[DONE]":
            return [*self._flush_all(), event]
        try:
            chunk = json.loads(event.data)
        except ValueError:
            return [event.with_data(self._restorer.restore(event.data))] if event.data else [event]
        if not isinstance(chunk, dict):
            return [event]

        before: list[Event] = []
        choices = chunk.get("choices")
        if isinstance(choices, list) and choices:
            self._last_chunk = chunk
            for choice in choices:
                if isinstance(choice, dict):
                    self._restore_choice(choice)
        else:
            # A usage-only or error chunk ends the choices: release what they hold first.
            before = self._flush_all()
        if isinstance(chunk.get("error"), dict):
            restore_string_leaves(chunk["error"], self._restorer)
        self.usage = openai_usage(chunk) or self.usage
        return [*before, event.with_data(json.dumps(chunk, ensure_ascii=False))]

    def end(self) -> list[Event]:
        return self._flush_all()

    def error_events(self, message: str) -> list[Event]:
        body = openai_error_body(502, "upstream_stream_failed", message)
        return [Event(data=json.dumps(body), modified=True)]

    def is_error(self, event: Event) -> bool:
        return is_openai_error_event(event)

    @abstractmethod
    def _restore_choice(self, choice: dict[str, Any]) -> None:
        """Restore one choice of a chunk in place."""

    @abstractmethod
    def _flush_all(self) -> list[Event]:
        """Return one chunk with the text every choice still holds, or nothing."""


class ChatStreamTransformer(ChoiceStreamTransformer):
    """Restores `chat.completion.chunk` events per choice and per tool call.

    Held-back text goes out in the chunk that carries the choice's
    `finish_reason`. Only when the stream reaches a usage-only chunk,
    `[DONE]` or its end with text still held (a choice that never finished)
    is an extra chunk sent to carry that text.
    """

    def __init__(self, restorer: Restorer) -> None:
        super().__init__(restorer)
        self._streams: dict[tuple[int, str, int], StreamRestorer] = {}
        self._content: dict[int, list[str]] = {}

    def _restore_choice(self, choice: dict[str, Any]) -> None:
        index = choice.get("index", 0)
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            delta = {}
        for field in ("content", "refusal", "reasoning_content"):
            if isinstance(delta.get(field), str):
                delta[field] = self._stream(index, field, 0).feed(delta[field])
        for call in delta.get("tool_calls") or []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                stream = self._stream(index, "tool", call.get("index", 0))
                function["arguments"] = stream.feed(function["arguments"])
        if choice.get("finish_reason") is not None:
            self._flush_choice(index, delta)
            choice["delta"] = delta
        self._keep_content(index, delta)

    def _keep_content(self, index: int, delta: dict[str, Any]) -> None:
        content = delta.get("content")
        if isinstance(content, str) and content:
            self._content.setdefault(index, []).append(content)

    def reply_texts(self) -> list[str]:
        return ["".join(pieces) for _, pieces in sorted(self._content.items())]

    def _stream(self, choice: int, field: str, tool: int) -> StreamRestorer:
        key = (choice, field, tool)
        stream = self._streams.get(key)
        if stream is None:
            if field == "tool":
                stream = self._restorer.stream(json_string_escape)
            else:
                stream = self._restorer.stream()
            self._streams[key] = stream
        return stream

    def _flush_choice(self, index: int, delta: dict[str, Any]) -> bool:
        """Move the held text of one choice into `delta`; return whether there was any."""
        flushed = False
        for (choice, field, tool), stream in sorted(self._streams.items()):
            if choice != index:
                continue
            held = stream.flush()
            if not held:
                continue
            flushed = True
            if field != "tool":
                delta[field] = (delta.get(field) or "") + held
                continue
            calls = delta.setdefault("tool_calls", [])
            call = next((c for c in calls if c.get("index", 0) == tool), None)
            if call is None:
                calls.append({"index": tool, "function": {"arguments": held}})
            else:
                function = call.setdefault("function", {})
                function["arguments"] = (function.get("arguments") or "") + held
        return flushed

    def _flush_all(self) -> list[Event]:
        choices = []
        for index in sorted({choice for choice, _, _ in self._streams}):
            delta: dict[str, Any] = {}
            if self._flush_choice(index, delta):
                self._keep_content(index, delta)
                choices.append({"index": index, "delta": delta, "finish_reason": None})
        if not choices:
            return []
        chunk: dict[str, Any] = {
            key: self._last_chunk[key]
            for key in ("id", "object", "created", "model", "system_fingerprint")
            if key in self._last_chunk
        }
        chunk["choices"] = choices
        return [Event(data=json.dumps(chunk, ensure_ascii=False), modified=True)]
