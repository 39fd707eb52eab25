"""The adapter interface every API dialect implements, and helpers they share."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sidecar.errors import InvalidBody
from sidecar.redact.restore import Restorer
from sidecar.sse import Event

JSON = Any

# Object keys whose string values are identifiers, signatures, enumerations or
# encoded binary data. The generic walk over item and block types that an
# adapter does not know field by field neither scans nor restores them. Keys
# such as `url` and `result` are scanned: their values can hold any text.
OPAQUE_KEYS = frozenset(
    {
        "type",
        "id",
        "call_id",
        "item_id",
        "tool_use_id",
        "approval_request_id",
        "container_id",
        "status",
        "role",
        "name",
        "server_label",
        "signature",
        "encrypted_content",
        "encrypted_index",
        "data",
        "file_data",
        "file_id",
        "file_url",
        "image_url",
        "media_type",
        "mime_type",
    }
)


class Part(StrEnum):
    """The part of a request a text belongs to; the names match the policy's `scope`."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL_RESULTS = "tool_results"
    TOOL_ARGUMENTS = "tool_arguments"


@dataclass
class TextSlot:
    """One text of a request and the way to write its rewritten form back."""

    text: str
    part: Part
    write: Callable[[str], None]


@dataclass
class RequestTexts:
    """Every text of one request, in the order the model reads them."""

    slots: list[TextSlot] = field(default_factory=list)
    _finalizers: list[Callable[[], None]] = field(default_factory=list)

    def add(self, container: dict[str, Any] | list[Any], key: Any, part: Part) -> None:
        """Add `container[key]` if it is a string."""
        value = container[key]
        if isinstance(value, str):
            self.slots.append(TextSlot(value, part, _setter(container, key)))

    def add_json_strings(self, value: JSON, part: Part, skip: frozenset[str] = frozenset()) -> None:
        """Add every string leaf of a parsed JSON value (object keys are not scanned).

        Leaves under an object key listed in `skip` are left out, at any depth.
        """
        for container, key in iter_string_leaves(value, skip):
            self.add(container, key, part)

    def add_json_text(self, container: dict[str, Any], key: str, part: Part) -> None:
        """Add the string leaves of a JSON document stored as a string, or the string itself.

        Tool-call arguments are JSON inside a string. Their string values are
        scanned and the document is serialised again only if one changed, so
        it stays valid JSON. A string that is not JSON is scanned as text.
        """
        raw = container.get(key)
        if not isinstance(raw, str):
            return
        try:
            document = json.loads(raw)
        except ValueError:
            self.add(container, key, part)
            return
        if isinstance(document, str):
            self.add(container, key, part)
            return
        before = len(self.slots)
        holder = [document]
        self.add_json_strings(holder, part)
        changed: list[bool] = []
        for slot in self.slots[before:]:
            slot.write = _marking(slot.write, changed)

        def finalize() -> None:
            if changed:
                container[key] = json.dumps(holder[0], ensure_ascii=False)

        self._finalizers.append(finalize)

    def write_back(self, texts: list[str]) -> None:
        """Write rewritten texts into the request, in the order of `slots`."""
        for slot, text in zip(self.slots, texts, strict=True):
            if text != slot.text:
                slot.write(text)
        for finalize in self._finalizers:
            finalize()


def _marking(write: Callable[[str], None], changed: list[bool]) -> Callable[[str], None]:
    def marking_write(text: str) -> None:
        write(text)
        changed.append(True)

    return marking_write


def _setter(container: dict[str, Any] | list[Any], key: Any) -> Callable[[str], None]:
    def write(text: str) -> None:
        container[key] = text

    return write


def iter_string_leaves(
    value: JSON, skip: frozenset[str] = frozenset()
) -> Iterator[tuple[Any, Any]]:
    """Yield (container, key) for every string leaf below `value`, except below keys in `skip`."""
    if isinstance(value, dict):
        items: Any = [(key, item) for key, item in value.items() if key not in skip]
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    for key, item in list(items):
        if isinstance(item, str):
            yield value, key
        else:
            yield from iter_string_leaves(item, skip)


def restore_string_leaves(
    value: JSON, restorer: Restorer, skip: frozenset[str] = frozenset()
) -> None:
    """Restore placeholders in the string leaves below `value`, except below keys in `skip`."""
    for container, key in iter_string_leaves(value, skip):
        container[key] = restorer.restore(container[key])


def require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidBody(message)


# Keys of a JSON schema whose values are structure, not text: renaming them
# would change which tool or property the model calls.
SCHEMA_KEYS = frozenset(
    {"type", "name", "format", "pattern", "$ref", "$schema", "$id", "required", "strict"}
)


def collect_request_fields(
    texts: RequestTexts,
    body: dict[str, Any],
    text_fields: tuple[str, ...],
    schema_fields: tuple[str, ...] = (),
) -> None:
    """Add the free text a request carries outside its messages.

    `text_fields` are fields such as `user` or `metadata` that clients fill
    with end-user ids (often an email address) and notes. Every string in
    them is scanned as user text. `schema_fields` contain tool definitions
    and output schemas, which the model reads. Their descriptions, titles,
    enums and examples are scanned as system text, but not their structure
    (`SCHEMA_KEYS`).
    """
    for name in text_fields:
        if isinstance(body.get(name), str):
            texts.add(body, name, Part.USER)
        elif name in body:
            texts.add_json_strings(body[name], Part.USER)
    for name in schema_fields:
        if name in body:
            texts.add_json_strings(body[name], Part.SYSTEM, skip=SCHEMA_KEYS)


def add_text_or_objects(
    texts: RequestTexts, container: dict[str, Any], key: str, part: Part, where: str, noun: str
) -> list[tuple[str, dict[str, Any]]]:
    """Add `container[key]` if it is a string; otherwise return its array's objects.

    Each object comes with its path for error messages. Raise `InvalidBody`
    when the value is neither a string nor an array of objects; `noun` names
    the objects in that message ("blocks", "content parts").
    """
    content = container.get(key)
    if isinstance(content, str):
        texts.add(container, key, part)
        return []
    items = expect_list(content, f"{where}.{key} must be a string or an array of {noun}")
    objects = []
    for index, item in enumerate(items):
        item_where = f"{where}.{key}[{index}]"
        objects.append((item_where, expect_object(item, f"{item_where} must be an object")))
    return objects


def expect_list(value: JSON, message: str) -> list[Any]:
    """Return `value` if it is a JSON array; raise `InvalidBody` with `message` if not."""
    if not isinstance(value, list):
        raise InvalidBody(message)
    return value


def expect_object(value: JSON, message: str) -> dict[str, Any]:
    """Return `value` if it is a JSON object; raise `InvalidBody` with `message` if not."""
    if not isinstance(value, dict):
        raise InvalidBody(message)
    return value


def openai_usage(document: JSON) -> dict[str, int] | None:
    """Return token counts from an OpenAI-style `usage` object, if the document has one."""
    usage = document.get("usage") if isinstance(document, dict) else None
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    counts = {
        "input_tokens": usage.get("prompt_tokens", usage.get("input_tokens")),
        "output_tokens": usage.get("completion_tokens", usage.get("output_tokens")),
        "cached_tokens": details.get("cached_tokens") if isinstance(details, dict) else None,
    }
    return {name: value for name, value in counts.items() if isinstance(value, int)}


class StreamTransformer(ABC):
    """Restores a dialect's event stream, one event at a time.

    `usage` contains the token counts once the stream has reported them.
    """

    usage: dict[str, int] | None = None

    def reply_texts(self) -> list[str]:
        """Return the restored texts of the reply, as a client sends them back as history."""
        return []

    @abstractmethod
    def feed(self, event: Event) -> list[Event]:
        """Return the events to send for one upstream event."""

    @abstractmethod
    def end(self) -> list[Event]:
        """Return the events to send when the upstream stream ends without its final event."""

    def error_events(self, message: str) -> list[Event]:
        """Return the events that tell the client the stream failed, in this dialect's format.

        The server sends them after the restored text when the upstream stream
        breaks, by a reset or a timeout. A dialect without an error event
        returns none, and the server then closes the connection without ending
        the response body, so that the client notices the failure.
        """
        return []

    def is_error(self, event: Event) -> bool:
        """Return whether an upstream event is this dialect's error event."""
        return False


class Adapter(ABC):
    """The interface of one API dialect, as the server uses it."""

    dialect: str

    @abstractmethod
    def collect(self, body: dict[str, Any]) -> RequestTexts:
        """Find every text the model will read, in reading order.

        Raise `InvalidBody` when the body does not have the dialect's shape.
        """

    @abstractmethod
    def restore_body(self, body: JSON, restorer: Restorer) -> None:
        """Restore placeholders in a complete response body, in place."""

    @abstractmethod
    def stream_transformer(self, restorer: Restorer) -> StreamTransformer:
        """Return a transformer for one streamed response."""

    @abstractmethod
    def error_body(self, status: int, code: str, message: str) -> dict[str, Any]:
        """Return an error body in this dialect's format."""

    def reply_texts(self, document: JSON) -> list[str]:
        """Return the restored texts of a complete reply, as a client sends them back as history."""
        return []

    def usage(self, document: JSON) -> dict[str, int] | None:
        """Return the token counts of a complete response body."""
        return openai_usage(document)

    def model(self, body: dict[str, Any]) -> str | None:
        model = body.get("model")
        return model if isinstance(model, str) else None

    def with_model(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        """Return a copy of `body` that names `model`, for an upstream that renames models."""
        return {**body, "model": model}

    def is_stream(self, body: dict[str, Any]) -> bool:
        return body.get("stream") is True
