"""The `pii-sidecar` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from sidecar import __version__
from sidecar.audit import cli as audit_cli
from sidecar.config import Settings, env_name, settings_from_env
from sidecar.errors import SidecarError

_SERVE_HELP = {
    "host": "address to listen on; 0.0.0.0 exposes the proxy to the network",
    "port": "TCP port to listen on",
    "upstream": "base URL of the provider or gateway; the request path is appended to it",
    "policy": "policy YAML file; with --policy-dir, the name of the default policy",
    "policy_dir": "directory of policy YAML files, all loaded; --policy names the default",
    "client_policies": "comma-separated policy names a request may pick with the X-PII-Policy "
    "header; empty turns client selection off",
    "policy_reload_interval": "seconds between checks of the policy files for changes; 0 turns "
    "reloading off",
    "model": "spaCy model: an installed package name or a model directory",
    "config": "YAML file with routes and upstreams",
    "log_format": "operational log format on stderr: json or console",
    "log_level": "operational log level: debug, info, warning or error",
    "audit_file": "append audit records to this hash-chained file; stdout then gets none unless "
    "--audit-stdout is true",
    "audit_stdout": "write audit records to stdout as JSON lines: true or false; unset means true "
    "only without --audit-file",
    "audit_key_file": "file containing the key of a keyed (HMAC-SHA256) audit chain",
    "audit_key_env": "name of the environment variable containing the audit chain key",
    "audit_checkpoint_every": "request records between checkpoints of the audit file, each "
    "followed by fsync; 0 turns interval checkpoints off",
    "audit_rotate_bytes": "size in bytes at which the audit file is rotated; 0 turns rotation off",
    "audit_fsync": "call fsync after every audit record, not only at checkpoints: true or false",
    "fingerprint_key_file": "file containing the key for fingerprints of detected values and API "
    "keys; unset turns fingerprints off",
    "fingerprint_key_env": "name of the environment variable containing the fingerprint key",
    "pricing_file": "YAML table of token prices for the estimated cost; unset uses the "
    "packaged one",
    "client_service": "name of the calling service, recorded in every audit record",
    "client_pod": "name of the calling pod, recorded in every audit record",
    "detect_timeout": "seconds PII detection may take before the request is rejected",
    "detect_cache_entries": "maximum number of texts whose findings are cached, so resent chat "
    "history is not analyzed again; 0 turns the cache off",
    "detect_cache_bytes": "maximum estimated memory of the findings cache, in bytes; 0 turns the "
    "cache off",
    "upstream_timeout": "seconds one attempt on the --upstream URL may take in total, "
    "from connecting to the last byte",
    "ca_bundle": "PEM file of CA certificates that replaces the system's CAs for upstream TLS",
    "max_body_bytes": "largest request body accepted, in bytes",
    "workers": "number of worker processes sharing the port",
    "grace_period": "seconds in-flight requests get to finish after SIGTERM",
    "metrics_host": "address of the metrics and health listener",
    "metrics_port": "TCP port of a listener that serves only /metrics, /healthz and /readyz, so "
    "a scraper needs no access to the proxy; 0 turns it off",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pii-sidecar",
        description="A proxy that removes PII from LLM requests and restores it in responses.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_serve(commands)
    _add_policy(commands)
    audit_cli.register(commands)
    _add_scan(commands)
    _add_eval(commands)
    return parser


def _add_eval(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from sidecar import evaluate

    command = commands.add_parser(
        "eval", help=evaluate.DESCRIPTION.rstrip(".").lower(), description=evaluate.DESCRIPTION
    )
    evaluate.add_arguments(command)
    command.set_defaults(handler=evaluate.run)


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser("serve", help="run the proxy")
    defaults = Settings.__dataclass_fields__
    for field in fields(Settings):
        flag = "--" + field.name.replace("_", "-")
        default = defaults[field.name].default
        shown = default if default not in ("", None) else "none"
        if field.name == "policy":
            shown = (
                "policies/default.yaml, else the copy inside the package; "
                "with --policy-dir, the policy named default"
            )
        serve.add_argument(
            flag,
            dest=field.name,
            default=None,
            help=f"{_SERVE_HELP[field.name]} (env {env_name(field.name)}; default: {shown})",
        )
    serve.set_defaults(handler=_serve)


def _add_policy(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    policy = commands.add_parser("policy", help="work with policy files")
    actions = policy.add_subparsers(dest="policy_command", required=True)
    check = actions.add_parser(
        "check", help="validate policy files, print each problem; exit 1 on any error"
    )
    check.add_argument(
        "paths", nargs="+", metavar="PATH", help="policy file, or directory of *.yaml policy files"
    )
    check.set_defaults(handler=_policy_check)


def _add_scan(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    scan = commands.add_parser(
        "scan", help="run a policy over a text as the proxy would and show the result"
    )
    scan.add_argument(
        "--policy", help="policy YAML file (default: policies/default.yaml, else the built-in one)"
    )
    scan.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default: text)"
    )
    scan.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="highlight findings in text output: auto colours on a terminal unless NO_COLOR is set",
    )
    scan.add_argument("--model", help="spaCy model: an installed package name or a model directory")
    scan.add_argument(
        "input",
        nargs="?",
        default="-",
        metavar="FILE",
        help="UTF-8 text file, or - for standard input (default)",
    )
    scan.set_defaults(handler=_scan)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Merge flags over environment variables over defaults, converting types."""
    given = settings_from_env()
    for field in fields(Settings):
        value = getattr(args, field.name, None)
        if value is not None:
            given[field.name] = value
    converted: dict[str, Any] = {}
    for field in fields(Settings):
        if field.name not in given:
            continue
        converted[field.name] = _convert(field.name, str(field.type), given[field.name])
    return Settings(**converted)


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _convert(name: str, type_name: str, value: str) -> object:
    if type_name.startswith("bool"):
        return _convert_bool(name, value)
    try:
        if type_name.startswith("int"):
            return int(value)
        if type_name.startswith("float"):
            return float(value)
    except ValueError:
        raise SidecarError(
            f"{env_name(name)} / --{name.replace('_', '-')}: {value!r} is not a number"
        ) from None
    return value


def _convert_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE | _FALSE:
        return lowered in _TRUE
    raise SidecarError(
        f"{env_name(name)} / --{name.replace('_', '-')}: {value!r} is not a boolean; "
        "use true or false"
    )


def _serve(args: argparse.Namespace) -> int:
    from sidecar.serve import run

    return run(settings_from_args(args))


def _policy_check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sidecar.policy.load import PolicyError, load_policy
    from sidecar.policy.reload import policy_files

    paths: list[Path] = []
    for given in map(Path, args.paths):
        paths += policy_files(given) if given.is_dir() else [given]
    failed = 0
    for path in paths:
        try:
            policy = load_policy(path)
        except PolicyError as exc:
            failed += 1
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            continue
        print(f"{path}: ok (policy {policy.name!r}, {policy.content_hash[:19]})")
    if failed:
        print(f"{failed} of {len(paths)} policy files are invalid", file=sys.stderr)
    return 1 if failed else 0


def _scan(args: argparse.Namespace) -> int:
    from sidecar.config import default_policy_path
    from sidecar.scan import run_scan

    policy = args.policy or default_policy_path()
    return run_scan(policy, args.input, args.format, args.color, args.model)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.handler(args)
    except SidecarError as exc:
        print(f"pii-sidecar: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
