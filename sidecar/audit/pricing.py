"""Token prices per model, loaded from YAML, and the estimated cost of one request.

Prices are USD per million tokens. A model matches by its exact name or one of its
aliases. An unknown model gets no estimate (None), never a price guessed from a similar
name. The packaged table is `sidecar/data/pricing.yaml`, and `load_pricing(path)` loads
another table in its place.

The usage mapping of an audit record counts tokens like this:

    input_tokens        every input token, cached reads and cache writes included
    cached_tokens       the part of input_tokens read from the prompt cache
    cache_write_tokens  the part of input_tokens written to the prompt cache (optional)
    output_tokens       every output token, reasoning tokens included

OpenAI reports usage this way. Anthropic reports `input_tokens` without cache reads and
writes, so its adapter adds `cache_read_input_tokens` and `cache_creation_input_tokens`
before the usage reaches `estimate_cost`.

NOTE: the estimate ignores batch and priority tiers, long-context surcharges, regional
uplifts, 1-hour cache writes and per-call tool fees, so it is a lower bound for requests
that use them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from sidecar.errors import SidecarError

BUILTIN_PRICING = resources.files("sidecar") / "data" / "pricing.yaml"
TOKENS_PER_PRICE_UNIT = Decimal(1_000_000)


class PricingError(SidecarError):
    """Error raised when a pricing file is missing, is not YAML, or does not validate."""


class ModelPrice(BaseModel):
    """Prices of one model in USD per million tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: str
    input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)
    cached_input: Decimal | None = Field(default=None, ge=0)
    cache_write: Decimal | None = Field(default=None, ge=0)
    aliases: tuple[str, ...] = ()
    example: bool = False

    def cost(self, usage: TokenUsage) -> Decimal:
        """Return the cost in USD of `usage` at these prices."""
        cached_price = self.input if self.cached_input is None else self.cached_input
        write_price = self.input if self.cache_write is None else self.cache_write
        uncached = usage.input_tokens - usage.cached_tokens - usage.cache_write_tokens

        total = (
            uncached * self.input
            + usage.cached_tokens * cached_price
            + usage.cache_write_tokens * write_price
            + usage.output_tokens * self.output
        )
        return total / TOKENS_PER_PRICE_UNIT


class TokenUsage(BaseModel):
    """Token counts of one request, as the module docstring defines them."""

    model_config = ConfigDict(frozen=True, extra="ignore", strict=True)

    input_tokens: int = Field(ge=0)
    # Embeddings responses report no output tokens, which is zero of them.
    output_tokens: int = Field(default=0, ge=0)
    cached_tokens: int = Field(default=0, ge=0)
    cache_write_tokens: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _parts_fit_in_input(self) -> TokenUsage:
        if self.cached_tokens + self.cache_write_tokens > self.input_tokens:
            raise ValueError("cached_tokens and cache_write_tokens exceed input_tokens")
        return self


class PricingTable(BaseModel):
    """A pricing file: where the prices come from, when they were read, and the models."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    currency: Literal["USD"]
    retrieved: date
    sources: dict[str, str] = {}
    models: dict[str, ModelPrice]

    _by_name: dict[str, ModelPrice] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _names_are_unique(self) -> PricingTable:
        seen: dict[str, str] = {}
        for name, price in self.models.items():
            for alias in (name, *price.aliases):
                if alias in seen:
                    raise ValueError(
                        f"model name {alias!r} appears under both {seen[alias]!r} and {name!r}"
                    )
                seen[alias] = name
        return self

    def model_post_init(self, context: Any, /) -> None:
        for name, price in self.models.items():
            for alias in (name, *price.aliases):
                self._by_name[alias] = price

    def price_for(self, model: str) -> ModelPrice | None:
        """Return the prices of `model` by exact name or alias, or None when unknown."""
        return self._by_name.get(model)

    def estimate_cost(self, model: str | None, usage: Mapping[str, Any] | None) -> float | None:
        """Return the estimated cost in USD of a request, or None when it cannot be estimated.

        None means an unknown or missing model, missing usage or `input_tokens`, or token
        counts that are not non-negative integers or whose cached parts exceed
        `input_tokens`. Missing `output_tokens` count as zero.
        """
        price = self.price_for(model) if model else None
        if price is None or usage is None:
            return None
        try:
            counts = TokenUsage.model_validate(usage)
        except ValidationError:
            return None
        return float(price.cost(counts))


def load_pricing(path: str | Path | None = None) -> PricingTable:
    """Load the pricing table at `path`, or the packaged one when `path` is None.

    Raise PricingError naming the file, the field and the value.
    """
    if path is None:
        return parse_pricing(BUILTIN_PRICING.read_bytes(), source="sidecar/data/pricing.yaml")
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PricingError(f"{path}: cannot read pricing file: {exc.strerror}") from exc
    return parse_pricing(raw, source=str(path))


def parse_pricing(raw: bytes, source: str) -> PricingTable:
    """Parse the bytes of a pricing file. `source` names the file in error messages."""
    try:
        document = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise PricingError(f"{source}: invalid YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise PricingError(
            f"{source}: a pricing file must be a YAML mapping, got {type(document).__name__}"
        )

    try:
        return PricingTable.model_validate(document)
    except ValidationError as exc:
        raise PricingError(_describe(source, exc)) from exc


def _describe(source: str, exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "(top level)"
        problems.append(f"{source}: {field}: {error['msg']} (got {error.get('input')!r})")
    return "\n".join(problems)
