"""``llmflow emulator``: serve the local Anthropic-compatible API."""

from __future__ import annotations

import typer

from llmflow.cli._app import app
from llmflow.emulator.config import EmulatorConfig, FaultSpecError, parse_faults

# Typer keeps single line breaks of a help paragraph, so each paragraph is one line here.
_HELP = (
    "Serve the local Anthropic-compatible API (point ANTHROPIC_BASE_URL at it).\n\n"
    "Runs until Ctrl-C; exit 2 on a bad --faults spec. Example:\n\n"
    "llmflow emulator --port 8787 --faults rate_limit=0.05 &\n\n"
    "ANTHROPIC_API_KEY=anything ANTHROPIC_BASE_URL=http://127.0.0.1:8787"
    " llmflow run pipelines/contract-qa.yaml -p policies/realtime.yaml"
)


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
