"""The protocol adapters by name, and the endpoint paths each one serves by default."""

from __future__ import annotations

from collections.abc import Callable

from sidecar.protocols.anthropic_messages import AnthropicMessagesAdapter
from sidecar.protocols.base import Adapter
from sidecar.protocols.openai_chat import OpenAIChatAdapter
from sidecar.protocols.openai_completions import OpenAICompletionsAdapter
from sidecar.protocols.openai_embeddings import OpenAIEmbeddingsAdapter
from sidecar.protocols.openai_responses import OpenAIResponsesAdapter

ADAPTERS: dict[str, Callable[[], Adapter]] = {
    "openai.chat": OpenAIChatAdapter,
    "openai.responses": OpenAIResponsesAdapter,
    "openai.completions": OpenAICompletionsAdapter,
    "openai.embeddings": OpenAIEmbeddingsAdapter,
    "anthropic.messages": AnthropicMessagesAdapter,
}

DEFAULT_ENDPOINTS: dict[str, str] = {
    "/v1/chat/completions": "openai.chat",
    "/v1/responses": "openai.responses",
    "/v1/completions": "openai.completions",
    "/v1/embeddings": "openai.embeddings",
    "/v1/messages": "anthropic.messages",
    "/v1/messages/count_tokens": "anthropic.messages",
}
"""Endpoint path → adapter name, for routes that do not list their own endpoints."""
