"""``llmflow emulator``: serve the local Anthropic-compatible API."""

from __future__ import annotations

import math

import typer

from llmflow.cli._app import app
from llmflow.emulator.config import (
    DEFAULT_BATCH_CACHE_HIT_RATE,
    EmulatorConfig,
    FaultSpecError,
    RateLimitSpecError,
    SpendCapSpecError,
    parse_faults,
    parse_rate_limits,
    parse_spend_cap,
)

# Typer keeps single line breaks of a help paragraph, so each paragraph is one line here.
_HELP = (
    "Serve the local Anthropic-compatible API (point ANTHROPIC_BASE_URL at it).\n\n"
    "Without --rate-limits it only reports rate-limit headers; with it, it enforces them"
    " (429 with retry-after). Past --spend-cap-usd of billed work, messages and batch"
    " creation answer 429 enforced_spend_limit_reached, with no retry-after.\n\n"
    "Answers are as long as the ask calls for (a label: a few tokens; a summary: more for a"
    " longer input), times --output-scale. A batch request reads its cached prefix with"
    " probability --batch-cache-hit-rate; sync requests always do.\n\n"
    "Runs until Ctrl-C; exit 2 on a bad --faults, --rate-limits or --spend-cap-usd."
    " Example:\n\n"
    "llmflow emulator --port 8787 --faults rate_limit=0.05 &\n\n"
    "ANTHROPIC_API_KEY=anything ANTHROPIC_BASE_URL=http://127.0.0.1:8787"
    " llmflow run pipelines/contract-qa.yaml -p policies/realtime.yaml"
)


def _positive_scale(value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"{value} is not a number > 0")
    return value


@app.command("emulator", help=_HELP)
def emulator(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8787, "--port", help="TCP port (0 picks a free one)."),
    latency_ms: float = typer.Option(
        0.0, "--latency-ms", min=0, help="Delay before every response begins."
    ),
    batch_seconds: float = typer.Option(
        0.0, "--batch-seconds", min=0, help="How long a message batch takes (0: ends at once)."
    ),
    faults: str = typer.Option(
        "",
        "--faults",
        metavar="NAME=P,...",
        help="Injected faults: probability per request of rate_limit (429), overloaded (529)"
        " or server_error (500), e.g. rate_limit=0.1,overloaded=0.05.",
    ),
    rate_limits: str = typer.Option(
        "",
        "--rate-limits",
        metavar="rpm=N,itpm=N,otpm=N",
        help="Enforce per-minute limits of requests, input tokens (uncached + cache writes)"
        " and output tokens as token buckets; any subset, the others at the Start tier"
        " (1000, 2000000, 400000). Without it, headers are reported only.",
    ),
    spend_cap_usd: str = typer.Option(
        "",
        "--spend-cap-usd",
        metavar="AMOUNT",
        help="Once this much (USD, at catalog prices) is billed, refuse further messages"
        " and batch creation with 429 enforced_spend_limit_reached.",
    ),
    batch_create_delay_ms: float = typer.Option(
        0.0,
        "--batch-create-delay-ms",
        min=0,
        help="Wait this long before answering a batch create (the batch already exists).",
    ),
    output_scale: float = typer.Option(
        1.0,
        "--output-scale",
        metavar="FLOAT",
        callback=_positive_scale,
        help="Multiply the length of every prose answer (structured outputs keep their"
        " schema's length).",
    ),
    batch_cache_hit_rate: float = typer.Option(
        DEFAULT_BATCH_CACHE_HIT_RATE,
        "--batch-cache-hit-rate",
        min=0.0,
        max=1.0,
        metavar="P",
        help="Probability that a batch request whose prefix is cached reads it (else it"
        " writes it again); deterministic per seed and custom_id.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for faults and generated content."),
) -> None:
    """Serve the local Anthropic-compatible API (point ANTHROPIC_BASE_URL at it)."""
    try:
        rates = parse_faults(faults)
        limits = parse_rate_limits(rate_limits)
        cap = parse_spend_cap(spend_cap_usd)
    except (FaultSpecError, RateLimitSpecError, SpendCapSpecError) as exc:
        option = {
            FaultSpecError: "--faults",
            RateLimitSpecError: "--rate-limits",
            SpendCapSpecError: "--spend-cap-usd",
        }[type(exc)]
        typer.echo(f"error: {option}: {exc}", err=True)
        raise typer.Exit(2) from None
    from llmflow.emulator.server import serve

    config = EmulatorConfig(
        latency_ms=latency_ms,
        batch_seconds=batch_seconds,
        faults=rates,
        seed=seed,
        rate_limits=limits,
        spend_cap_usd=cap,
        batch_create_delay_ms=batch_create_delay_ms,
        output_scale=output_scale,
        batch_cache_hit_rate=batch_cache_hit_rate,
    )
    typer.echo(f"llmflow emulator on http://{host}:{port} (Ctrl-C to stop)")
    serve(config, host=host, port=port)
