"""Running the server process: logging, signals and the aiohttp runner."""

from __future__ import annotations

from aiohttp import web

from sidecar.config import Settings
from sidecar.logs import configure_logging, get_logger
from sidecar.server.app import SERVER_OPTIONS, create_app

log = get_logger("sidecar.serve")


def run(settings: Settings) -> int:
    """Serve until SIGINT or SIGTERM; return the exit status."""
    configure_logging(settings.log_format, settings.log_level)
    app = create_app(settings)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        print=None,
        access_log=None,
        shutdown_timeout=settings.grace_period,
        **SERVER_OPTIONS,
    )
    return 0
