"""The aiohttp server: handlers that move bytes between client, core and upstream."""
