"""A bounded in-memory cache of findings per text, so resent chat history is not analyzed again.

Chat clients resend the whole conversation on every turn, so most texts of a
request were analyzed on an earlier turn. `FindingsCache.analyze` looks each
text up and runs the detector only on the texts it has not seen.

The key of an entry is a keyed BLAKE2b digest of three things, each of which
changes the findings:

- the detector instance (a random token per `Detector`, so a reloaded model or
  a different language never shares entries with the old one);
- the policy: its `content_hash`, which covers the policy file and its
  recognizer files, and the policy's field values, so a policy built or
  changed in code gets its own entries;
- the text itself, as UTF-8.

The cache keeps no text: only the digest and the findings, which hold entity
types, offsets, scores and recognizer names. The digest key is random per
process, so a digest cannot be checked against a guessed text without it.

The cache is bounded by `max_entries` and by `max_bytes`, an estimate of the
memory of its entries from `sys.getsizeof`. The least recently used entries
are evicted first, and an entry larger than `max_bytes` is not stored.
"""

from __future__ import annotations

import hashlib
import secrets
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from sidecar.detect.findings import Finding
from sidecar.policy.model import Policy

_DIGEST_BYTES = 32
# Characters `lookup` hashes at most per call: encoding and hashing 64 Ki characters
# takes about 0.1 ms (measured on an AMD EPYC core).
LOOKUP_MAX_CHARS = 64 * 1024
# Estimated bytes of one entry besides its findings: the digest, the tuple and
# the OrderedDict node. Strings in findings are shared, so they are not counted.
_ENTRY_BYTES = sys.getsizeof(b"\0" * _DIGEST_BYTES) + sys.getsizeof(()) + 100
_FINDING_BYTES = sys.getsizeof(Finding("PERSON", 0, 1, 0.5, "")) + sys.getsizeof(0.5) + 8


class Analyzer(Protocol):
    def analyze(
        self, texts: Sequence[str], policy: Policy, deadline: float | None = None
    ) -> list[list[Finding]]: ...


@dataclass(frozen=True)
class CacheStats:
    """Counters of a `FindingsCache` since it was created; `bytes` is an estimate."""

    hits: int
    misses: int
    evictions: int
    entries: int
    bytes: int


class FindingsCache:
    """Findings per (detector, policy, text), least recently used evicted first.

    `max_entries=0` or `max_bytes=0` turns the cache off: `analyze` then
    passes every text to the detector. Thread-safe.
    """

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        if max_entries < 0 or max_bytes < 0:
            raise ValueError(
                f"cache limits must not be negative, got {max_entries} entries, {max_bytes} bytes"
            )
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[bytes, tuple[Finding, ...]] = OrderedDict()
        self._bytes = 0
        self._hits = self._misses = self._evictions = 0
        self._lock = threading.Lock()
        self._key = secrets.token_bytes(32)
        self._detector_tokens: weakref.WeakKeyDictionary[Analyzer, bytes] = (
            weakref.WeakKeyDictionary()
        )
        self._policy_fingerprints: dict[int, tuple[weakref.ref[Policy], bytes]] = {}

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.max_bytes > 0

    def analyze(
        self,
        detector: Analyzer,
        texts: Sequence[str],
        policy: Policy,
        deadline: float | None = None,
    ) -> list[list[Finding]]:
        """Return `detector.analyze(texts, policy)`, analyzing only the texts not in the cache."""
        if not self.enabled:
            return detector.analyze(texts, policy, deadline)

        scope = self._detector_token(detector) + self._policy_fingerprint(policy)
        keys = [self._digest(scope, text) for text in texts]
        found = self._lookup(keys)
        missing = _unique_missing(keys, found)
        if missing:
            fresh = detector.analyze([texts[i] for i in missing.values()], policy, deadline)
            for key, findings in zip(missing, fresh, strict=True):
                found[key] = tuple(findings)
                self._store(key, found[key])
        return [list(found[key]) for key in keys]

    def lookup(
        self, detector: Analyzer, texts: Sequence[str], policy: Policy
    ) -> list[list[Finding]] | None:
        """Return the findings of `texts` when every one is cached, else None.

        Cheap enough for an event loop: it returns None without hashing when
        the texts hold more than `LOOKUP_MAX_CHARS` characters in total, and
        counts nothing unless every text is found.
        """
        if not self.enabled or sum(len(text) for text in texts) > LOOKUP_MAX_CHARS:
            return None
        scope = self._detector_token(detector) + self._policy_fingerprint(policy)
        keys = [self._digest(scope, text) for text in texts]
        with self._lock:
            entries = [self._entries.get(key) for key in keys]
            if any(entry is None for entry in entries):
                return None
            for key in keys:
                self._entries.move_to_end(key)
            self._hits += len(keys)
        return [list(entry) for entry in entries if entry is not None]

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                self._hits, self._misses, self._evictions, len(self._entries), self._bytes
            )

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def _digest(self, scope: bytes, text: str) -> bytes:
        digest = hashlib.blake2b(scope, digest_size=_DIGEST_BYTES, key=self._key)
        # Lone surrogates come through JSON; "surrogatepass" encodes them instead of failing.
        digest.update(text.encode("utf-8", "surrogatepass"))
        return digest.digest()

    def _lookup(self, keys: list[bytes]) -> dict[bytes, tuple[Finding, ...]]:
        found = {}
        with self._lock:
            for key in keys:
                entry = self._entries.get(key)
                if entry is None:
                    self._misses += 1
                    continue
                self._hits += 1
                self._entries.move_to_end(key)
                found[key] = entry
        return found

    def _store(self, key: bytes, findings: tuple[Finding, ...]) -> None:
        size = entry_bytes(findings)
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = findings
            self._bytes += size
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= entry_bytes(evicted)
                self._evictions += 1

    def _detector_token(self, detector: Analyzer) -> bytes:
        with self._lock:
            token = self._detector_tokens.get(detector)
            if token is None:
                token = self._detector_tokens[detector] = secrets.token_bytes(16)
            return token

    def _policy_fingerprint(self, policy: Policy) -> bytes:
        with self._lock:
            cached = self._policy_fingerprints.get(id(policy))
        if cached is not None and cached[0]() is policy:
            return cached[1]
        fingerprint = policy_fingerprint(policy)
        # The entry goes when the policy is freed, before its id can be reused.
        reference = weakref.ref(policy, partial(_forget, self._policy_fingerprints, id(policy)))
        with self._lock:
            self._policy_fingerprints[id(policy)] = (reference, fingerprint)
        return fingerprint


def policy_fingerprint(policy: Policy) -> bytes:
    """Return a digest of the policy's content hash and of every field value."""
    digest = hashlib.blake2b(policy.content_hash.encode(), digest_size=_DIGEST_BYTES)
    digest.update(b"\0")
    digest.update(policy.model_dump_json().encode())
    return digest.digest()


def entry_bytes(findings: tuple[Finding, ...]) -> int:
    """Return the estimated memory of one cache entry, in bytes."""
    return _ENTRY_BYTES + 8 * len(findings) + _FINDING_BYTES * len(findings)


def _forget(
    fingerprints: dict[int, tuple[weakref.ref[Policy], bytes]],
    policy_id: int,
    reference: weakref.ref[Policy],
) -> None:
    entry = fingerprints.get(policy_id)
    if entry is not None and entry[0] is reference:
        del fingerprints[policy_id]


def _unique_missing(keys: list[bytes], found: dict[bytes, tuple[Finding, ...]]) -> dict[bytes, int]:
    """Return the index of the first text of each key not found, in order."""
    missing: dict[bytes, int] = {}
    for index, key in enumerate(keys):
        if key not in found and key not in missing:
            missing[key] = index
    return missing
