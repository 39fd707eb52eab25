"""The exception tree of pii-sidecar.

    SidecarError
    ├── PolicyError          (sidecar.policy.load) a policy does not load or validate
    ├── ConfigError          a setting or configuration file is invalid
    └── RequestError         a client request is rejected; carries an HTTP status
        ├── InvalidBody      malformed JSON, a JSON body of the wrong shape
        ├── UnsupportedBody  not JSON, or a content encoding that cannot be decoded
        ├── UnknownRoute     a route with a body but no protocol adapter
        ├── Blocked          the policy blocks an entity found in the request
        ├── DetectorFailed   detection raised or timed out
        └── UpstreamFailed   no upstream answered

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
