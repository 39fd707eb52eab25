"""The findings cache: hits, bounds, eviction order and separation by detector and policy."""

from __future__ import annotations

import gc
from collections.abc import Sequence

import pytest

from sidecar.detect.cache import LOOKUP_MAX_CHARS, FindingsCache, entry_bytes
from sidecar.detect.findings import Finding
from sidecar.policy.model import Action, EntityRule, Policy

POLICY = Policy(version=1, name="cache-test")


class CountingDetector:
    """Finds one PERSON per text, spanning the first word; records every text it analyzes."""

    def __init__(self, entity_type: str = "PERSON") -> None:
        self.entity_type = entity_type
        self.analyzed: list[str] = []

    def analyze(
        self, texts: Sequence[str], policy: Policy, deadline: float | None = None
    ) -> list[list[Finding]]:
        self.analyzed.extend(texts)
        return [
            [Finding(self.entity_type, 0, len(text.split(" ")[0]), 0.85, "fake")] for text in texts
        ]


def big_cache() -> FindingsCache:
    return FindingsCache(max_entries=1000, max_bytes=1024 * 1024)


def test_resent_texts_not_analyzed_again() -> None:
    cache, detector = big_cache(), CountingDetector()

    cache.analyze(detector, ["Ada wrote", "Grace replied"], POLICY)
    second = cache.analyze(detector, ["Ada wrote", "Grace replied", "Alan asked"], POLICY)

    assert detector.analyzed == ["Ada wrote", "Grace replied", "Alan asked"]
    assert second == detector.analyze(["Ada wrote", "Grace replied", "Alan asked"], POLICY)


def test_stats_count_hits_and_misses() -> None:
    cache, detector = big_cache(), CountingDetector()

    cache.analyze(detector, ["one", "two"], POLICY)
    cache.analyze(detector, ["one", "three"], POLICY)
    stats = cache.stats()

    assert stats.hits == 1
    assert stats.misses == 3
    assert stats.entries == 3


def test_duplicate_texts_analyzed_once() -> None:
    cache, detector = big_cache(), CountingDetector()

    results = cache.analyze(detector, ["same text", "other", "same text"], POLICY)

    assert detector.analyzed == ["same text", "other"]
    assert results[0] == results[2]


def test_returned_lists_are_copies() -> None:
    cache, detector = big_cache(), CountingDetector()

    cache.analyze(detector, ["Ada wrote"], POLICY)[0].clear()

    assert cache.analyze(detector, ["Ada wrote"], POLICY)[0] != []


def test_entries_bounded_least_recent_evicted() -> None:
    cache, detector = FindingsCache(max_entries=2, max_bytes=1024 * 1024), CountingDetector()

    cache.analyze(detector, ["a"], POLICY)
    cache.analyze(detector, ["b"], POLICY)
    cache.analyze(detector, ["a"], POLICY)
    cache.analyze(detector, ["c"], POLICY)
    detector.analyzed.clear()
    cache.analyze(detector, ["a", "b"], POLICY)

    assert detector.analyzed == ["b"]
    assert cache.stats().entries == 2


def test_bytes_bounded() -> None:
    one_entry = entry_bytes((Finding("PERSON", 0, 1, 0.85, "fake"),))
    cache, detector = FindingsCache(max_entries=1000, max_bytes=3 * one_entry), CountingDetector()

    cache.analyze(detector, [f"text {i}" for i in range(10)], POLICY)
    stats = cache.stats()

    assert stats.entries == 3
    assert stats.bytes <= 3 * one_entry
    assert stats.evictions == 7


def test_entry_larger_than_bound_not_stored() -> None:
    cache, detector = FindingsCache(max_entries=1000, max_bytes=10), CountingDetector()

    cache.analyze(detector, ["Ada wrote"], POLICY)

    assert cache.stats().entries == 0


@pytest.mark.parametrize(
    ("entries", "size"), [(0, 1024), (1024, 0)], ids=["no-entries", "no-bytes"]
)
def test_zero_limit_turns_cache_off(entries: int, size: int) -> None:
    cache, detector = FindingsCache(max_entries=entries, max_bytes=size), CountingDetector()

    cache.analyze(detector, ["Ada"], POLICY)
    cache.analyze(detector, ["Ada"], POLICY)

    assert not cache.enabled
    assert detector.analyzed == ["Ada", "Ada"]


def test_negative_limit_rejected() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        FindingsCache(max_entries=-1, max_bytes=10)


def test_policies_do_not_share_entries() -> None:
    cache, detector = big_cache(), CountingDetector()
    other = Policy(version=1, name="other")

    cache.analyze(detector, ["Ada"], POLICY)
    cache.analyze(detector, ["Ada"], other)

    assert detector.analyzed == ["Ada", "Ada"]


def test_policy_changed_in_code_gets_own_entries() -> None:
    cache, detector = big_cache(), CountingDetector()
    loaded = POLICY.model_copy(update={"content_hash": "sha256:abc"})
    changed = loaded.model_copy(update={"entities": {"PERSON": EntityRule(action=Action.ALLOW)}})

    cache.analyze(detector, ["Ada"], loaded)
    cache.analyze(detector, ["Ada"], changed)

    assert detector.analyzed == ["Ada", "Ada"]


def test_same_policy_content_shares_entries() -> None:
    cache, detector = big_cache(), CountingDetector()

    cache.analyze(detector, ["Ada"], Policy(version=1, name="twin"))
    cache.analyze(detector, ["Ada"], Policy(version=1, name="twin"))

    assert detector.analyzed == ["Ada"]


def test_detectors_do_not_share_entries() -> None:
    cache = big_cache()
    person, location = CountingDetector("PERSON"), CountingDetector("LOCATION")

    cache.analyze(person, ["Paris"], POLICY)
    found = cache.analyze(location, ["Paris"], POLICY)

    assert found[0][0].entity_type == "LOCATION"


def test_freed_policy_forgotten() -> None:
    cache, detector = big_cache(), CountingDetector()
    policy = Policy(version=1, name="short-lived")

    cache.analyze(detector, ["Ada"], policy)
    del policy
    gc.collect()

    assert cache._policy_fingerprints == {}


def test_cache_holds_digests_not_texts() -> None:
    cache, detector = big_cache(), CountingDetector()
    text = "Ada Lovelace, ada@example.org"

    cache.analyze(detector, [text], POLICY)

    for key, findings in cache._entries.items():
        assert len(key) == 32
        assert text.encode() not in key
        assert all(isinstance(finding, Finding) for finding in findings)


def test_lone_surrogate_text_cached() -> None:
    cache, detector = big_cache(), CountingDetector()

    cache.analyze(detector, ["bad \ud800 text"], POLICY)
    cache.analyze(detector, ["bad \ud800 text"], POLICY)

    assert detector.analyzed == ["bad \ud800 text"]


def test_lookup_returns_cached_findings() -> None:
    cache, detector = big_cache(), CountingDetector()
    analyzed = cache.analyze(detector, ["Ada wrote", "Grace replied"], POLICY)

    found = cache.lookup(detector, ["Grace replied", "Ada wrote"], POLICY)

    assert found == [analyzed[1], analyzed[0]]
    assert cache.stats().hits == 2


def test_lookup_none_when_one_text_missing() -> None:
    cache, detector = big_cache(), CountingDetector()
    cache.analyze(detector, ["Ada wrote"], POLICY)

    found = cache.lookup(detector, ["Ada wrote", "Alan asked"], POLICY)

    assert found is None
    assert cache.stats().hits == 0
    assert detector.analyzed == ["Ada wrote"]


def test_lookup_skips_long_texts() -> None:
    cache, detector = big_cache(), CountingDetector()
    long_text = "word " * (LOOKUP_MAX_CHARS // 5 + 1)
    cache.analyze(detector, [long_text], POLICY)

    assert cache.lookup(detector, [long_text], POLICY) is None
