"""Tests of the pricing table: the packaged YAML, model lookup, cost estimates and errors."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from sidecar.audit.pricing import PricingError, PricingTable, load_pricing, parse_pricing

TABLE = b"""
currency: USD
retrieved: 2026-12-04
models:
  alpha:
    provider: example
    input: 2.00
    output: 8.00
    cached_input: 0.50
    cache_write: 2.50
    aliases: [alpha-2026-01-01]
  beta:
    provider: example
    input: 1.00
    output: 1.00
"""


@pytest.fixture
def table() -> PricingTable:
    return parse_pricing(TABLE, source="test.yaml")


# The packaged table


def test_packaged_table_loads() -> None:
    packaged = load_pricing()

    assert packaged.currency == "USD"
    assert packaged.retrieved == date(2026, 12, 4)
    assert "anthropic" in packaged.sources
    assert "openai" in packaged.sources


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o-mini",
        "gpt-4o",
        "gpt-4.1",
        "claude-sonnet-4-5",
        "claude-haiku-4-5",
        "claude-opus-4-5",
    ],
)
def test_packaged_table_prices_well_known_models(model: str) -> None:
    price = load_pricing().price_for(model)

    assert price is not None
    assert price.output > price.input > 0


def test_packaged_openai_prices_are_marked_examples() -> None:
    packaged = load_pricing()

    for name, price in packaged.models.items():
        assert price.example == (price.provider == "openai"), name


def test_packaged_gpt_4o_mini_cost() -> None:
    cost = load_pricing().estimate_cost(
        "gpt-4o-mini-2024-07-18",
        {"input_tokens": 1_000_000, "output_tokens": 1_000_000, "cached_tokens": 0},
    )

    assert cost == pytest.approx(0.75)


# Lookup


def test_exact_name_and_alias_match(table: PricingTable) -> None:
    assert table.price_for("alpha") is table.price_for("alpha-2026-01-01")
    assert table.price_for("alpha") is not None


@pytest.mark.parametrize(
    "model",
    [
        pytest.param("alpha-2027-01-01", id="unknown-snapshot"),
        pytest.param("alpha-mini", id="longer-name"),
        pytest.param("ALPHA", id="other-case"),
        pytest.param("alph", id="prefix"),
        pytest.param("", id="empty"),
    ],
)
def test_unknown_model_gets_no_cost(table: PricingTable, model: str) -> None:
    assert table.price_for(model) is None
    assert table.estimate_cost(model, {"input_tokens": 10, "output_tokens": 10}) is None


def test_missing_model_or_usage_gets_no_cost(table: PricingTable) -> None:
    assert table.estimate_cost(None, {"input_tokens": 10, "output_tokens": 10}) is None
    assert table.estimate_cost("alpha", None) is None


# Cost


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        pytest.param({"input_tokens": 1_000_000, "output_tokens": 0}, 2.00, id="input-only"),
        pytest.param({"input_tokens": 0, "output_tokens": 1_000_000}, 8.00, id="output-only"),
        pytest.param({"input_tokens": 1_000_000}, 2.00, id="no-output-count"),
        pytest.param(
            {"input_tokens": 1_000_000, "output_tokens": 0, "cached_tokens": 400_000},
            0.6 * 2.00 + 0.4 * 0.50,
            id="cached-reads",
        ),
        pytest.param(
            {"input_tokens": 1_000_000, "output_tokens": 0, "cache_write_tokens": 1_000_000},
            2.50,
            id="cache-writes",
        ),
        pytest.param(
            {"input_tokens": 10, "output_tokens": 20, "cached_tokens": 0}, 0.00018, id="small"
        ),
        pytest.param(
            {"input_tokens": 10, "output_tokens": 20, "reasoning_tokens": 5},
            0.00018,
            id="extra-keys-ignored",
        ),
    ],
)
def test_cost_estimate(table: PricingTable, usage: dict[str, Any], expected: float) -> None:
    assert table.estimate_cost("alpha", usage) == pytest.approx(expected)


def test_cached_price_defaults_to_input_price(table: PricingTable) -> None:
    cost = table.estimate_cost(
        "beta", {"input_tokens": 1_000_000, "output_tokens": 0, "cached_tokens": 1_000_000}
    )

    assert cost == pytest.approx(1.00)


@pytest.mark.parametrize(
    "usage",
    [
        pytest.param({"input_tokens": -1, "output_tokens": 0}, id="negative"),
        pytest.param({"input_tokens": 1.5, "output_tokens": 0}, id="float"),
        pytest.param({"input_tokens": True, "output_tokens": 0}, id="bool"),
        pytest.param({"input_tokens": "10", "output_tokens": 0}, id="string"),
        pytest.param({"output_tokens": 10}, id="missing-input"),
        pytest.param(
            {"input_tokens": 10, "output_tokens": 0, "cached_tokens": 11}, id="cached-exceeds-input"
        ),
        pytest.param(
            {"input_tokens": 10, "output_tokens": 0, "cached_tokens": 6, "cache_write_tokens": 5},
            id="cache-parts-exceed-input",
        ),
    ],
)
def test_invalid_usage_gets_no_cost(table: PricingTable, usage: dict[str, Any]) -> None:
    assert table.estimate_cost("alpha", usage) is None


def test_prices_keep_decimal_values(table: PricingTable) -> None:
    price = table.price_for("alpha")

    assert price is not None
    assert price.cached_input == Decimal("0.5")


# Loading and errors


def test_load_override_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_bytes(TABLE)

    assert load_pricing(path).price_for("beta") is not None


def test_missing_file_names_path(tmp_path: Path) -> None:
    with pytest.raises(PricingError, match=r"absent\.yaml: cannot read"):
        load_pricing(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        pytest.param(b"models: [", "invalid YAML", id="not-yaml"),
        pytest.param(b"- a list", "must be a YAML mapping", id="not-mapping"),
        pytest.param(
            TABLE.replace(b"input: 1.00", b"input: -1"), "models.beta.input", id="negative-price"
        ),
        pytest.param(
            TABLE.replace(b"currency: USD", b"currency: EUR"), "currency", id="other-currency"
        ),
        pytest.param(TABLE + b"    discount: 0.5\n", "models.beta.discount", id="unknown-field"),
        pytest.param(
            TABLE.replace(b"output: 1.00", b""), "models.beta.output", id="missing-output"
        ),
        pytest.param(
            TABLE + b"    aliases: [alpha-2026-01-01]\n",
            "appears under both 'alpha' and 'beta'",
            id="duplicate-alias",
        ),
    ],
)
def test_invalid_table_names_field(document: bytes, message: str) -> None:
    with pytest.raises(PricingError) as caught:
        parse_pricing(document, source="prices.yaml")

    assert str(caught.value).startswith("prices.yaml")
    assert message in str(caught.value)
