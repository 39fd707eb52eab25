"""OpenAI Responses (`POST /v1/responses`), JSON and streamed.

Scanned: `instructions`, the string values of `prompt.variables`, and `input`
as a string or a list of items: message text and refusal parts, the string
leaves of `function_call` and MCP call arguments, tool call outputs, and
custom tool call input. Item types without a field-by-field rule, such as
built-in tool calls, have every string leaf scanned except identifiers and
encoded data (`OPAQUE_KEYS`). Image, file and audio parts pass unchanged, so
PII inside them reaches the provider.

`reasoning` and `compaction` items pass unchanged both ways: their encrypted
content cannot be rewritten, so their summaries keep placeholders too.

NOTE: with `previous_response_id` or `conversation` the provider adds stored
turns that are not in the request. Their placeholders were numbered for an earlier
request, so `<PERSON_1>` in them can name another value than `<PERSON_1>` in
this request, and the model may repeat it. Resending the whole conversation
in `input` keeps the numbering consistent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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
    openai_usage,
    restore_string_leaves,
)
from sidecar.protocols.openai_chat import openai_error_body
from sidecar.redact.restore import (
    Escape,
    Restorer,
    StreamRestorer,
    json_string_escape,
    no_escape,
)
from sidecar.sse import Event

_ROLE_PARTS = {
    "user": Part.USER,
    "system": Part.SYSTEM,
    "developer": Part.SYSTEM,
    "assistant": Part.ASSISTANT,
}
# Content part types and the field that contains their text.
_TEXT_PART_FIELDS = {
    "input_text": "text",
    "output_text": "text",
    "text": "text",
    "refusal": "refusal",
}
_PASSED_PARTS = frozenset({"input_image", "input_file", "input_audio"})
_PASSED_ITEMS = frozenset({"reasoning", "compaction", "compaction_trigger", "item_reference"})
_OUTPUT_ITEMS = frozenset(
    {"function_call_output", "custom_tool_call_output", "local_shell_call_output"}
)


class OpenAIResponsesAdapter(Adapter):
    dialect = "openai.responses"

    def collect(self, body: dict[str, Any]) -> RequestTexts:
        texts = RequestTexts()
        instructions = body.get("instructions")
        if isinstance(instructions, str):
            texts.add(body, "instructions", Part.SYSTEM)
        elif instructions is not None:
            raise InvalidBody("'instructions' must be a string")
        _collect_prompt_variables(texts, body.get("prompt"))

        input_value = body.get("input")
        if isinstance(input_value, str):
            texts.add(body, "input", Part.USER)
        elif input_value is not None:
            items = expect_list(input_value, "'input' must be a string or an array of items")
            for index, item in enumerate(items):
                where = f"input[{index}]"
                _collect_item(texts, expect_object(item, f"{where} must be an object"), where)
        collect_request_fields(
            texts, body, ("user", "safety_identifier", "metadata"), ("tools", "text")
        )
        return texts

    def restore_body(self, body: JSON, restorer: Restorer) -> None:
        if isinstance(body, dict):
            restore_response(body, restorer)

    def stream_transformer(self, restorer: Restorer) -> StreamTransformer:
        return ResponsesStreamTransformer(restorer)

    def error_body(self, status: int, code: str, message: str) -> dict[str, Any]:
        return openai_error_body(status, code, message)


def _collect_prompt_variables(texts: RequestTexts, prompt: JSON) -> None:
    variables = prompt.get("variables") if isinstance(prompt, dict) else None
    if not isinstance(variables, dict):
        return
    for name, value in variables.items():
        if isinstance(value, str):
            texts.add(variables, name, Part.USER)
        elif isinstance(value, dict) and value.get("type") == "input_text":
            texts.add(value, "text", Part.USER)


def _collect_item(texts: RequestTexts, item: dict[str, Any], where: str) -> None:
    item_type = item.get("type", "message")
    if not isinstance(item_type, str):
        raise InvalidBody(f"{where}.type must be a string")
    if item_type in _PASSED_ITEMS:
        return
    if item_type == "message":
        role = item.get("role")
        part = _ROLE_PARTS.get(role) if isinstance(role, str) else None
        if part is None:
            raise InvalidBody(f"{where}.role {role!r} is not a known role")
        _collect_parts(texts, item, "content", part, where)
    elif item_type in ("function_call", "mcp_call", "mcp_approval_request"):
        texts.add_json_text(item, "arguments", Part.TOOL_ARGUMENTS)
        for key in ("output", "error"):
            if isinstance(item.get(key), str):
                texts.add(item, key, Part.TOOL_RESULTS)
    elif item_type == "custom_tool_call":
        if isinstance(item.get("input"), str):
            texts.add(item, "input", Part.TOOL_ARGUMENTS)
    elif item_type in _OUTPUT_ITEMS:
        _collect_parts(texts, item, "output", Part.TOOL_RESULTS, where)
    else:
        part = Part.TOOL_RESULTS if item_type.endswith("_output") else Part.TOOL_ARGUMENTS
        texts.add_json_strings(item, part, OPAQUE_KEYS)


def _collect_parts(
    texts: RequestTexts, item: dict[str, Any], key: str, part: Part, where: str
) -> None:
    """Collect `item[key]`: a string, or an array of content parts."""
    objects = add_text_or_objects(texts, item, key, part, where, "content parts")
    for part_where, content_part in objects:
        part_type = content_part.get("type")
        field = _TEXT_PART_FIELDS.get(part_type) if isinstance(part_type, str) else None
        if field is not None:
            if not isinstance(content_part.get(field), str):
                raise InvalidBody(f"{part_where}.{field} must be a string")
            texts.add(content_part, field, part)
        elif part_type not in _PASSED_PARTS:
            texts.add_json_strings(content_part, part, OPAQUE_KEYS)


def restore_response(response: dict[str, Any], restorer: Restorer) -> None:
    """Restore a `response` object, or an error body, in place."""
    for item in response.get("output") or []:
        if isinstance(item, dict):
            restore_item(item, restorer)
    instructions = response.get("instructions")
    if isinstance(instructions, str):
        response["instructions"] = restorer.restore(instructions)
    elif isinstance(instructions, list):
        restore_string_leaves(instructions, restorer, OPAQUE_KEYS)
    if isinstance(response.get("error"), dict):
        restore_string_leaves(response["error"], restorer, OPAQUE_KEYS)


def restore_item(item: dict[str, Any], restorer: Restorer) -> None:
    """Restore one output item in place; reasoning items stay as they are."""
    item_type = item.get("type")
    if item_type in _PASSED_ITEMS:
        return
    if item_type == "message":
        for part in item.get("content") or []:
            if isinstance(part, dict):
                restore_part(part, restorer)
        return
    if isinstance(item.get("arguments"), str):
        item["arguments"] = restorer.restore(item["arguments"], json_string_escape)
    restore_string_leaves(item, restorer, OPAQUE_KEYS | {"arguments"})


def restore_part(part: dict[str, Any], restorer: Restorer) -> None:
    field = _TEXT_PART_FIELDS.get(str(part.get("type")))
    if field is not None and isinstance(part.get(field), str):
        part[field] = restorer.restore(part[field])
    elif part.get("type") != "reasoning_text":
        restore_string_leaves(part, restorer, OPAQUE_KEYS | {"logprobs"})


@dataclass(frozen=True)
class _Delta:
    """A streamed text field: its `.done` event type, the field repeating the text, its escape."""

    done: str
    field: str
    escape: Escape


_DELTAS = {
    "response.output_text.delta": _Delta("response.output_text.done", "text", no_escape),
    "response.refusal.delta": _Delta("response.refusal.done", "refusal", no_escape),
    "response.function_call_arguments.delta": _Delta(
        "response.function_call_arguments.done", "arguments", json_string_escape
    ),
    "response.custom_tool_call_input.delta": _Delta(
        "response.custom_tool_call_input.done", "input", no_escape
    ),
    "response.mcp_call_arguments.delta": _Delta(
        "response.mcp_call_arguments.done", "arguments", json_string_escape
    ),
}
_DONE_TO_DELTA = {delta.done: delta_type for delta_type, delta in _DELTAS.items()}
_RESPONSE_EVENTS = frozenset(
    {
        "response.created",
        "response.queued",
        "response.in_progress",
        "response.completed",
        "response.failed",
        "response.incomplete",
    }
)
_TERMINAL_EVENTS = frozenset(
    {"response.completed", "response.failed", "response.incomplete", "error"}
)

_Key = tuple[str, int, int]


@dataclass
class _Field:
    """One streamed field: its restorer, and the delta event held back with the restorer's text."""

    stream: StreamRestorer
    pending: tuple[Event, dict[str, Any]] | None = None


class ResponsesStreamTransformer(StreamTransformer):
    """Restores Responses stream events without adding or dropping any.

    Every `.delta` field has its own stream restorer. While that restorer
    holds back text, the delta event that produced it is held back too. The
    next delta of the same field releases it as it is. The field's `.done`
    event, `response.output_item.done`, a terminal event or the end of the
    stream releases it with the held text appended. So the event count and
    the `sequence_number` values stay as the provider sent them. `.done` events,
    `response.output_item.*`, `response.content_part.*` and the `response`
    objects of lifecycle events are restored whole, so they repeat exactly
    the text the deltas added up to.

    NOTE: a held-back delta is sent after events of other fields that arrive
    in the meantime, so with interleaved output items the client can see
    `sequence_number` values out of order.
    """

    def __init__(self, restorer: Restorer) -> None:
        self._restorer = restorer
        self._fields: dict[_Key, _Field] = {}
        self._last_sequence_number = -1

    def feed(self, event: Event) -> list[Event]:
        try:
            payload = json.loads(event.data)
        except ValueError:
            if not event.data:
                return [event]
            return [event.with_data(self._restorer.restore(event.data))]
        if not isinstance(payload, dict):
            return [event]

        kind = str(payload.get("type", event.event))
        if isinstance(payload.get("sequence_number"), int):
            self._last_sequence_number = payload["sequence_number"]
        if kind in _DELTAS:
            return self._delta(kind, event, payload)
        before = self._release_for(kind, payload)
        if kind in _DONE_TO_DELTA:
            delta = _DELTAS[_DONE_TO_DELTA[kind]]
            if isinstance(payload.get(delta.field), str):
                payload[delta.field] = self._restorer.restore(payload[delta.field], delta.escape)
        elif not self._restore_other(kind, payload):
            return [*before, event]
        return [*before, _with_payload(event, payload)]

    def end(self) -> list[Event]:
        return self._release(list(self._fields))

    def error_events(self, message: str) -> list[Event]:
        payload = {
            "type": "error",
            "code": "upstream_stream_failed",
            "message": message,
            "param": None,
            "sequence_number": self._last_sequence_number + 1,
        }
        return [Event(event="error", data=json.dumps(payload), modified=True)]

    def is_error(self, event: Event) -> bool:
        if event.event == "error":
            return True
        if '"error"' not in event.data:
            return False
        try:
            payload = json.loads(event.data)
        except ValueError:
            return False
        return isinstance(payload, dict) and payload.get("type") == "error"

    def _delta(self, kind: str, event: Event, payload: dict[str, Any]) -> list[Event]:
        if not isinstance(payload.get("delta"), str):
            return [event]
        key = _key(kind, payload)
        state = self._fields.get(key)
        if state is None:
            state = self._fields[key] = _Field(self._restorer.stream(_DELTAS[kind].escape))
        released = [_with_payload(*state.pending)] if state.pending else []
        state.pending = None
        payload["delta"] = state.stream.feed(payload["delta"])
        if state.stream.held:
            state.pending = (event, payload)
            return released
        return [*released, _with_payload(event, payload)]

    def _release_for(self, kind: str, payload: dict[str, Any]) -> list[Event]:
        """Send the held-back deltas that must precede an event of type `kind`."""
        if kind in _TERMINAL_EVENTS:
            return self._release(list(self._fields))
        if kind in _DONE_TO_DELTA:
            return self._release([_key(_DONE_TO_DELTA[kind], payload)])
        if kind == "response.output_item.done":
            output_index = payload.get("output_index")
            return self._release([key for key in self._fields if key[1] == output_index])
        return []

    def _release(self, keys: list[_Key]) -> list[Event]:
        events = []
        for key in sorted(keys):
            state = self._fields.pop(key, None)
            if state is None:
                continue
            held = state.stream.flush()
            if state.pending is not None:
                event, payload = state.pending
                payload["delta"] += held
                events.append(_with_payload(event, payload))
        return events

    def _restore_other(self, kind: str, payload: dict[str, Any]) -> bool:
        """Restore an event other than a delta or `.done`; return False if it passes unchanged."""
        if kind in _RESPONSE_EVENTS:
            response = payload.get("response")
            if isinstance(response, dict):
                restore_response(response, self._restorer)
                self.usage = openai_usage(response) or self.usage
        elif kind in ("response.output_item.added", "response.output_item.done"):
            if isinstance(payload.get("item"), dict):
                restore_item(payload["item"], self._restorer)
        elif kind in ("response.content_part.added", "response.content_part.done"):
            if isinstance(payload.get("part"), dict):
                restore_part(payload["part"], self._restorer)
        elif kind.startswith("response.reasoning"):
            return False
        else:
            restore_string_leaves(payload, self._restorer, OPAQUE_KEYS)
        return True


def _key(kind: str, payload: dict[str, Any]) -> _Key:
    output_index = payload.get("output_index")
    content_index = payload.get("content_index")
    return (
        kind,
        output_index if isinstance(output_index, int) else 0,
        content_index if isinstance(content_index, int) else 0,
    )


def _with_payload(event: Event, payload: dict[str, Any]) -> Event:
    return event.with_data(json.dumps(payload, ensure_ascii=False))
