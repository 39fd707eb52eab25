"""A tuned IP address recognizer that skips infrastructure addresses."""

from __future__ import annotations

import ipaddress

from presidio_analyzer import RecognizerResult
from presidio_analyzer.predefined_recognizers import IpRecognizer

from sidecar.detect.recognizers.code import is_code_line
from sidecar.detect.recognizers.numbers import CodeAwareMixin

# Networks that address infrastructure, never one person's connection: RFC 1918
# private ranges, carrier-grade NAT, loopback, link-local, unspecified, multicast
# and IPv6 unique-local. The documentation ranges of RFC 5737 and RFC 3849 are
# not listed, because examples and test data use them in place of public addresses.
INFRASTRUCTURE_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "0.0.0.0/8",
        "224.0.0.0/4",
        "255.255.255.255/32",
        "::1/128",
        "::/128",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    )
)
# Public DNS resolvers, which appear in configs and are nobody's address.
PUBLIC_RESOLVERS = frozenset(
    ipaddress.ip_address(address)
    for address in ("8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1", "9.9.9.9", "208.67.222.222")
)


class TunedIpRecognizer(CodeAwareMixin, IpRecognizer):
    """IP addresses that can belong to a person's connection.

    Drops infrastructure addresses, public DNS resolvers, network prefixes in
    CIDR notation (`203.0.113.0/24`), literals in lines of source code and
    matches inside longer tokens.
    """

    def _keep(self, text: str, result: RecognizerResult) -> bool:
        if not super()._keep(text, result):
            return False
        value = text[result.start : result.end]
        if "/" in value or _followed_by_prefix_length(text, result.end):
            return False
        if is_code_line(text, result.start):
            return False
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            return True
        if address in PUBLIC_RESOLVERS:
            return False
        return not any(address in network for network in INFRASTRUCTURE_NETWORKS)


def _followed_by_prefix_length(text: str, end: int) -> bool:
    return text[end : end + 1] == "/" and text[end + 1 : end + 2].isdigit()
