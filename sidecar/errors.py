"""The exception tree of pii-sidecar.

    SidecarError
    ├── ConfigError              a setting or configuration file is invalid
    ├── PolicyError              (policy.load) a policy does not load or validate
    ├── HashKeyError             (policy.runtime) the key of the `hash` action is unusable
    ├── PricingError             (audit.pricing) the pricing table is invalid
    ├── AuditError               (audit.chain) an audit file cannot be written or read
    ├── SurrogateError           (redact.surrogates) no surrogate could be made for a value
    ├── CorpusError              (evaluate) an evaluation corpus is invalid
    └── RequestError             a client request is rejected; carries an HTTP status and code
        ├── InvalidBody          400: malformed JSON, a JSON body of the wrong shape
        ├── Blocked              400: the policy blocks an entity found in the request
        ├── UnknownPolicy        400 (policy.store): `X-PII-Policy` names no loaded policy
        ├── PolicyNotSelectable  403 (policy.store): the client may not pick that policy
        ├── UnknownRoute         404: a route with a body but no protocol adapter
        ├── UnsupportedBody      415: not JSON, or a content encoding that cannot be decoded
        ├── UpstreamFailed       502: no upstream answered
        └── DetectorFailed       503: detection raised or timed out

`sidecar.server.proxy` adds three private request errors: 413 for a body over
the size limit, 500 for an unexpected failure and 502 for an upstream response
it cannot decode.

Core modules raise these; only `sidecar.server` turns them into HTTP responses
in the error format of the client's API dialect. Messages never contain a
request value, because they are logged and returned to clients.
"""

from __future__ import annotations


class SidecarError(Exception):
    """Base class of every error pii-sidecar raises on purpose."""


class ConfigError(SidecarError):
    """A setting or configuration file is invalid."""


class RequestError(SidecarError):
    """A request is rejected; `status` and `code` go into the error response."""

    status = 400
    code = "invalid_request"


class InvalidBody(RequestError):
    status = 400
    code = "invalid_body"


class UnsupportedBody(RequestError):
    status = 415
    code = "unsupported_body"


class UnknownRoute(RequestError):
    status = 404
    code = "route_not_covered"


class Blocked(RequestError):
    status = 400
    code = "pii_blocked"


class DetectorFailed(RequestError):
    status = 503
    code = "pii_detector_failed"


class UpstreamFailed(RequestError):
    status = 502
    code = "upstream_unavailable"
