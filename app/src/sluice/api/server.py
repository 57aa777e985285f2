"""``sluice serve``: one API instance under uvicorn (docs/decisions/http-server.md), one process,
one event loop; the role runs N of them behind HAProxy.

Shutdown drains: on SIGTERM the instance first reports not ready (``/readyz`` 503, so HAProxy's
health check takes it out of rotation), keeps serving for ``SLUICE_DRAIN_SECONDS`` while the
check notices, then stops accepting connections, finishes the requests in flight (each waits at
most its produce timeout for Kafka) and closes its clients. The rolling restart drains the
instance in HAProxy before it signals it, so in practice no request arrives during the grace.

The app and its metrics come from :func:`sluice.service.run_api`, which wires the real
adapters; this module only runs it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from sluice.config import Settings

log = logging.getLogger(__name__)

#: Seconds an instance keeps serving after SIGTERM while it reports not ready.
DEFAULT_DRAIN_SECONDS = 3.0


class _DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain step before its own graceful shutdown."""

    def __init__(self, config: uvicorn.Config, drain_seconds: float) -> None:
        super().__init__(config)
        self.drain_seconds = drain_seconds
        self._draining: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        app = self.config.app
        if self._draining is not None or getattr(app.state, "draining", True):
            super().handle_exit(sig, frame)  # a second signal: stop now
            return
        app.state.draining = True
        log.info(
            "%s: draining for %.1fs, then stopping", signal.Signals(sig).name, self.drain_seconds
        )
        self._draining = asyncio.get_event_loop().create_task(self._stop_later(sig, frame))

    async def _stop_later(self, sig: int, frame: FrameType | None) -> None:
        await asyncio.sleep(self.drain_seconds)
        super().handle_exit(sig, frame)


def serve(app: Starlette, settings: Settings, port: int | None = None) -> int:
    """Run ``app`` until SIGTERM/SIGINT on ``settings.bind_host`` and ``port`` (default:
    ``settings.bind_port``); 0 after a drained stop."""
    drain = float(os.environ.get("SLUICE_DRAIN_SECONDS", DEFAULT_DRAIN_SECONDS))
    config = uvicorn.Config(
        app,
        host=settings.bind_host,
        port=port or settings.bind_port,
        lifespan="on",
        # what docs/decisions/http-server.md measured; named so a missing one fails at start
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
        timeout_graceful_shutdown=int(settings.kafka.produce_timeout_seconds) + 5,
        log_config=None,
    )
    server = _DrainingServer(config, drain)
    server.run()
    return 0
