"""Cost math against hand-computed values, effective dates, unpriced models."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from tierwise.errors import PricingError
from tierwise.pricing import PriceCatalogue
from tierwise.types import Usage


@pytest.fixture(scope="module")
def catalogue() -> PriceCatalogue:
    return PriceCatalogue.default()


def test_opus_cost_with_every_token_class(catalogue: PriceCatalogue) -> None:
    # Opus 4.6: $5 in, $25 out, $6.25 5m write, $10 1h write, $0.50 read (per million).
    usage = Usage(
        input_tokens=1_000,
        output_tokens=2_000,  # includes 1,500 thinking tokens, billed as output
        thinking_tokens=1_500,
        cache_read_tokens=10_000,
        cache_write_5m_tokens=4_000,
        cache_write_1h_tokens=3_000,
    )
    # 1000*5 + 2000*25 + 10000*0.5 + 4000*6.25 + 3000*10 = 5000+50000+5000+25000+30000 = 115000
    expected = Decimal("115000") / Decimal(1_000_000)
    cost = catalogue.cost(usage, "claude-opus-4-6")
    assert cost.usd == expected == Decimal("0.115")
    assert cost.price_version == "claude-opus-4-6@2026-02-05"


def test_haiku_is_priced_as_haiku_4_5_not_haiku_3(catalogue: PriceCatalogue) -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert catalogue.cost(usage, "claude-haiku-4-5").usd == Decimal(6)  # $1 + $5
    assert catalogue.cost(usage, "claude-haiku-4-5-20251001").usd == Decimal(6)  # dated alias
    assert catalogue.cost(usage, "claude-3-haiku-20240307").usd == Decimal("1.5")


def test_sonnet_cache_read_exact_to_the_token(catalogue: PriceCatalogue) -> None:
    usage = Usage(input_tokens=7, output_tokens=3, cache_read_tokens=1, cache_write_5m_tokens=1)
    # 7*3 + 3*15 + 1*0.30 + 1*3.75 = 21 + 45 + 0.30 + 3.75 = 70.05 per million
    assert catalogue.cost(usage, "claude-sonnet-4-6").usd == Decimal("0.00007005")


def test_unknown_model_is_unpriced_never_zero(catalogue: PriceCatalogue) -> None:
    cost = catalogue.cost(Usage(input_tokens=10, output_tokens=10), "claude-unknown-9")
    assert cost.usd is None
    assert not cost.priced
    assert cost.price_version is None
    assert catalogue.cost_ratio("claude-unknown-9", "claude-opus-4-6") is None


def test_price_in_force_follows_effective_dates() -> None:
    text = """
catalogue_version = "t"
[models."m"]
[[models."m".prices]]
effective_from = "2026-01-01"
input = "2"
output = "10"
cache_write_5m = "2.5"
cache_write_1h = "4"
cache_read = "0.2"
source = "test"
[[models."m".prices]]
effective_from = "2026-10-07"
input = "2"
output = "10"
cache_write_5m = "2.5"
cache_write_1h = "4"
cache_read = "0.1"
source = "test"
"""
    cat = PriceCatalogue.from_text(text, source="inline")
    usage = Usage(cache_read_tokens=1_000_000)
    before = dt.datetime(2026, 10, 6, 23, tzinfo=dt.UTC)
    after = dt.datetime(2026, 10, 7, 0, 1, tzinfo=dt.UTC)
    assert cat.cost(usage, "m", before).usd == Decimal("0.2")
    assert cat.cost(usage, "m", after).usd == Decimal("0.1")
    assert cat.cost(usage, "m", after).price_version == "m@2026-10-07"
    # Before the first row: no price in force, so unpriced rather than a guess.
    assert cat.cost(usage, "m", dt.datetime(2025, 1, 1, tzinfo=dt.UTC)).usd is None


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ('input = 1.5\noutput = "1"', "write prices as strings"),
        ('input = "abc"\noutput = "1"', "is not a number"),
        ('input = "-1"\noutput = "1"', "non-negative"),
        ('output = "1"', "missing 'input'"),
    ],
)
def test_malformed_catalogue_rows_are_rejected_with_their_place(row: str, message: str) -> None:
    text = f"""
[models."m"]
[[models."m".prices]]
{row}
cache_write_5m = "1"
cache_write_1h = "1"
cache_read = "1"
source = "s"
"""
    with pytest.raises(PricingError, match=message) as info:
        PriceCatalogue.from_text(text, source="bad.toml")
    assert 'bad.toml: models."m".prices[0]' in str(info.value)


def test_row_without_source_is_rejected() -> None:
    text = '[models."m"]\n[[models."m".prices]]\ninput="1"\noutput="1"\ncache_write_5m="1"\n'
    text += 'cache_write_1h="1"\ncache_read="1"\n'
    with pytest.raises(PricingError, match="source"):
        PriceCatalogue.from_text(text, source="x")


def test_cost_ratio_comes_from_the_catalogue(catalogue: PriceCatalogue) -> None:
    # 3:1 input:output mix. Haiku: 3*1 + 5 = 8; Opus: 3*5 + 25 = 40 → 0.2.
    assert catalogue.cost_ratio("claude-haiku-4-5", "claude-opus-4-6") == Decimal("0.2")
    assert catalogue.cost_ratio("claude-sonnet-4-6", "claude-opus-4-6") == Decimal("0.6")


def test_every_shipped_row_has_a_source_and_string_prices(catalogue: PriceCatalogue) -> None:
    assert catalogue.version
    for info in catalogue.models():
        assert info.prices, info.model
        for row in info.prices:
            assert row.source
            assert row.cache_read < row.input < row.cache_write_5m < row.cache_write_1h
