"""Serve the emulator over HTTP with uvicorn."""

from __future__ import annotations

import logging

import structlog
import uvicorn

from llmflow.emulator.app import create_app
from llmflow.emulator.config import EmulatorConfig

log = structlog.get_logger("llmflow.emulator")


def serve(config: EmulatorConfig, host: str = "127.0.0.1", port: int = 8787) -> None:
    """Run the emulator until interrupted (h11 HTTP, no access log on the hot path)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    log.info(
        "emulator.started",
        url=f"http://{host}:{port}",
        latency_ms=config.latency_ms,
        batch_seconds=config.batch_seconds,
        batch_create_delay_ms=config.batch_create_delay_ms,
        rate_limits=repr(config.rate_limits) if config.rate_limits else None,
        spend_cap_usd=str(config.spend_cap_usd) if config.spend_cap_usd is not None else None,
        seed=config.seed,
    )
    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        http="h11",
        loop="asyncio",
        access_log=False,
        log_level="warning",
    )
