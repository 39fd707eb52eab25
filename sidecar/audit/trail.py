"""The audit trail of a running sidecar: it completes each request's record and writes it.

`AuditTrail` adds to a record what the proxy does not know. That is the client's service
and pod names from the settings, a keyed fingerprint of the client's API key, keyed
fingerprints of the detected values, and the estimated cost from the pricing table.
`open_audit_trail` builds one from the settings, with their sinks behind a
`BackgroundWriter`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sidecar.audit.chain import AuditError
from sidecar.audit.keys import api_key_fingerprint, fingerprint, load_key, normalize_value
from sidecar.audit.pricing import PricingTable, load_pricing
from sidecar.audit.record import AuditRecord, ClientIdentity
from sidecar.audit.sink import AuditSink, ChainedFileSink, StdoutSink, TeeSink
from sidecar.audit.writer import BackgroundWriter, ErrorHook
from sidecar.errors import ConfigError
from sidecar.logs import get_logger
from sidecar.redact.plan import Decision

if TYPE_CHECKING:
    from sidecar.config import Settings

log = get_logger("sidecar.audit")

RecordWriter = Callable[[dict[str, Any]], None]

# Request headers that carry the client's API key, in the order they are tried.
_KEY_HEADERS = ("authorization", "x-api-key", "api-key")


class AuditTrail:
    """Completes audit records and passes them to `writer`.

    `writer` is a `BackgroundWriter`, which `close` closes, or any function that takes a
    record. `fingerprint_key` turns on keyed fingerprints of detected values and of the
    client's API key; without it neither is computed. `pricing` defaults to the packaged
    table.
    """

    def __init__(
        self,
        writer: RecordWriter | BackgroundWriter,
        *,
        pricing: PricingTable | None = None,
        fingerprint_key: bytes | None = None,
        service: str | None = None,
        pod: str | None = None,
    ) -> None:
        self._background = writer if isinstance(writer, BackgroundWriter) else None
        self._write: RecordWriter = writer.write if isinstance(writer, BackgroundWriter) else writer
        self._pricing = pricing if pricing is not None else load_pricing()
        self._fingerprint_key = fingerprint_key
        self._client = ClientIdentity(service=service or None, pod=pod or None)

    @property
    def fingerprints_enabled(self) -> bool:
        return self._fingerprint_key is not None

    def identify_client(self, headers: Mapping[str, str]) -> ClientIdentity:
        """Return the client identity of a request with these headers."""
        api_key = _api_key(headers)
        if api_key is None or self._fingerprint_key is None:
            return self._client
        fingerprinted = api_key_fingerprint(api_key, self._fingerprint_key)
        return ClientIdentity(self._client.service, self._client.pod, fingerprinted)

    def value_fingerprints(
        self, texts: Sequence[str], decisions: Sequence[Sequence[Decision]]
    ) -> dict[str, list[str]] | None:
        """Return the distinct fingerprints of the detected values per entity type, sorted.

        `decisions[i]` contains the decisions of `texts[i]`, with offsets into it. Return None
        when no fingerprint key is configured.
        """
        key = self._fingerprint_key
        if key is None:
            return None
        found: dict[str, set[str]] = {}
        for text, text_decisions in zip(texts, decisions, strict=True):
            for decision in text_decisions:
                entity_type = decision.finding.entity_type
                value = text[decision.finding.start : decision.finding.end]
                digest = fingerprint(normalize_value(entity_type, value), key)
                found.setdefault(entity_type, set()).add(digest)
        return {entity_type: sorted(found[entity_type]) for entity_type in sorted(found)}

    def finish(self, record: AuditRecord) -> dict[str, Any]:
        """Add the estimated cost to `record`, write it, and return its JSON form."""
        record.cost_usd = self._pricing.estimate_cost(record.model, record.usage)
        finished = record.to_dict()
        self._write(finished)
        return finished

    def pending_records(self) -> int:
        """Return the number of records queued for the writer thread."""
        return self._background.pending if self._background is not None else 0

    def close(self) -> None:
        """Write the queued records and close the sinks. Blocks until both are done."""
        if self._background is not None:
            self._background.close()


def _api_key(headers: Mapping[str, str]) -> str | None:
    for name in _KEY_HEADERS:
        value = headers.get(name)
        if not value:
            continue
        _scheme, _, credential = value.strip().partition(" ")
        if name == "authorization" and credential:
            return credential.strip() or None
        return value.strip() or None
    return None


def open_audit_trail(
    settings: Settings, writer: RecordWriter | None = None, on_error: ErrorHook | None = None
) -> AuditTrail:
    """Build the audit trail the settings describe.

    With `writer` the records go to it and no sink is opened, as in tests. Otherwise the
    sinks of the settings are opened behind a `BackgroundWriter` that calls `on_error` for
    each record it fails to write. Raise `ConfigError` or `PricingError` when a key, the
    pricing file or the audit file cannot be loaded, so that the sidecar stops before it
    serves a request it cannot audit.
    """
    pricing = load_pricing(settings.pricing_file)
    fingerprint_key = load_key(
        path=settings.fingerprint_key_file, env_var=settings.fingerprint_key_env
    )
    chain_key = load_key(path=settings.audit_key_file, env_var=settings.audit_key_env)
    if fingerprint_key is not None and fingerprint_key == chain_key:
        raise ConfigError(
            "the fingerprint key and the audit chain key are the same key. Auditors need the "
            "chain key to verify files, and must not get the fingerprint key, so use two keys"
        )

    destination: RecordWriter | BackgroundWriter
    if writer is not None:
        destination = writer
    else:
        destination = BackgroundWriter(_open_sinks(settings, chain_key), on_error=on_error)
    return AuditTrail(
        destination,
        pricing=pricing,
        fingerprint_key=fingerprint_key,
        service=settings.client_service,
        pod=settings.client_pod,
    )


def _open_sinks(settings: Settings, chain_key: bytes | None) -> AuditSink:
    sinks: list[AuditSink] = []
    if settings.audit_to_stdout:
        sinks.append(StdoutSink())
    if settings.audit_file is not None:
        sinks.append(_open_file_sink(settings, chain_key))
    if len(sinks) == 1:
        return sinks[0]
    return TeeSink(*sinks)


def _open_file_sink(settings: Settings, chain_key: bytes | None) -> ChainedFileSink:
    assert settings.audit_file is not None
    try:
        return ChainedFileSink(
            settings.audit_file,
            chain_key,
            checkpoint_every=settings.audit_checkpoint_every,
            rotate_bytes=settings.audit_rotate_bytes or None,
            fsync_each_record=settings.audit_fsync,
            on_checkpoint=_log_checkpoint,
        )
    except AuditError as exc:
        raise ConfigError(str(exc)) from exc


def _log_checkpoint(checkpoint: dict[str, Any]) -> None:
    """Log each checkpoint's seq and hash, so that the shipped logs hold anchors for `verify`."""
    log.info(
        "audit_checkpoint",
        reason=checkpoint["checkpoint"]["reason"],
        anchor=f"{checkpoint['seq']}:{checkpoint['hash']}",
    )
