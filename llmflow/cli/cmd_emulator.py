"""``llmflow emulator``: serve the local Anthropic-compatible API."""

from __future__ import annotations

import typer

from llmflow.cli._app import app
from llmflow.emulator.config import EmulatorConfig, FaultSpecError, parse_faults


@app.command("emulator")
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
        help="Injected faults, e.g. rate_limit=0.1,overloaded=0.05,server_error=0.02.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for faults and generated content."),
) -> None:
    """Serve the local Anthropic-compatible API (point ANTHROPIC_BASE_URL at it)."""
    try:
        rates = parse_faults(faults)
    except FaultSpecError as exc:
        typer.echo(f"error: --faults: {exc}", err=True)
        raise typer.Exit(2) from None
    from llmflow.emulator.server import serve

    config = EmulatorConfig(
        latency_ms=latency_ms, batch_seconds=batch_seconds, faults=rates, seed=seed
    )
    typer.echo(f"llmflow emulator on http://{host}:{port} (Ctrl-C to stop)")
    serve(config, host=host, port=port)
