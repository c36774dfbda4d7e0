"""``llmflow models``: the model catalog, and with ``--check`` its drift from the Models API."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import typer

from llmflow.cli._app import app
from llmflow.cli._inputs import Backend

if TYPE_CHECKING:
    from rich.console import RenderableType

    from llmflow.catalog import Catalog, ModelInfo, Prices
    from llmflow.cli._model_drift import Drift


class ModelsFormat(StrEnum):
    table = "table"
    json = "json"


#: Catalog fields shown in a table column, by the column's header.
_COLUMN_FIELDS = {
    "in": ("input_usd_per_mtok",),
    "out": ("output_usd_per_mtok",),
    "5m write": ("cache_write_5m_multiplier",),
    "1h write": ("cache_write_1h_multiplier",),
    "read": ("cache_read_multiplier",),
    "min cache": ("min_cacheable_tokens",),
    "ctx/out": ("context_window", "max_output_tokens"),
}
THIRD_PARTY_MARK = "*"
ASSUMED_MARK = "?"


def load_catalog() -> Catalog:
    """The packaged catalog, imported on first use (``llmflow --version`` never loads it)."""
    from llmflow.catalog import load_catalog as load

    return load()


def prices_json(prices: Prices) -> dict[str, str]:
    """Per-category prices as decimal strings (USD per million tokens)."""
    from llmflow.catalog import format_usd

    return {name: format_usd(value) for name, value in prices.model_dump().items()}


def model_json(info: ModelInfo, catalog: Catalog) -> dict[str, Any]:
    """One model of ``llmflow models --format json``."""
    from llmflow.catalog import format_usd

    fast = info.fast
    return {
        "id": info.id,
        "display_name": info.display_name,
        "line": info.line,
        "status": info.status,
        "lifecycle": info.lifecycle,
        "released": _iso(info.released),
        "retires_at": _iso(info.retires_at),
        "replacement": info.replacement,
        "aliases": list(info.aliases),
        "context_window": info.context_window,
        "max_output_tokens": info.max_output_tokens,
        "batch_max_output_tokens": info.batch_max_output_tokens,
        "min_cacheable_tokens": info.min_cacheable_tokens,
        "tokenizer": info.tokenizer,
        "prices": prices_json(info.prices()),
        "bands": [
            {
                "above_prompt_tokens": band.above_prompt_tokens,
                "prices": prices_json(info.prices(prompt_tokens=band.above_prompt_tokens + 1)),
            }
            for band in info.bands
        ],
        "fast": None
        if fast is None
        else {"prices": prices_json(info.prices(speed="fast")), "until": _iso(fast.until)},
        "batch_multiplier": format_usd(info.batch_multiplier),
        "data_residency": info.data_residency,
        "residency_multiplier": format_usd(info.residency_multiplier),
        "capabilities": info.capabilities.model_dump(mode="json"),
        "thinking_estimates": dict(info.thinking_estimates),
        "third_party": list(info.third_party),
        "assumed": list(info.assumed),
        "notes": list(info.notes),
        "priced_on": info.priced_on.isoformat(),
        "source": catalog.source(info.price_source),
    }


def _iso(day: dt.date | None) -> str | None:
    return None if day is None else day.isoformat()


def _size(tokens: int) -> str:
    if tokens % 1_000_000 == 0:
        return f"{tokens // 1_000_000}M"
    return f"{tokens // 1000}K" if tokens % 1000 == 0 else str(tokens)


def _mark(info: ModelInfo, column: str) -> str:
    fields = _COLUMN_FIELDS.get(column, ())
    mark = THIRD_PARTY_MARK if any(f in info.third_party for f in fields) else ""
    return mark + (ASSUMED_MARK if any(f in info.assumed for f in fields) else "")


def _cell(info: ModelInfo, column: str, text: str) -> str:
    return text + _mark(info, column)


def catalog_table(catalog: Catalog) -> RenderableType:
    """The catalog for people: one row a model, then what a row cannot say."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from llmflow.catalog import format_usd

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), header_style="bold")
    table.add_column("model", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for column in ("ctx/out", "in", "out", "5m write", "1h write", "read", "min cache"):
        table.add_column(column.replace(" ", "\n", 1), justify="right", no_wrap=True)
    table.add_column("tok", no_wrap=True)
    for info in catalog.models.values():
        p = info.prices()
        row = {
            "ctx/out": f"{_size(info.context_window)}/{_size(info.max_output_tokens)}",
            "in": format_usd(p.input),
            "out": format_usd(p.output),
            "5m write": format_usd(p.cache_write_5m),
            "1h write": format_usd(p.cache_write_1h),
            "read": format_usd(p.cache_read),
            "min cache": str(info.min_cacheable_tokens),
        }
        cells = [_cell(info, column, text) for column, text in row.items()]
        table.add_row(info.id, info.status, *cells, info.tokenizer)
    title = Text(
        f"Model catalog of {catalog.catalog_date.isoformat()}, USD per million tokens\n"
        "(batch: 0.5x every category; inference_geo us: 1.1x, 4.6+ models)",
        style="bold",
    )
    return Group(title, table, *(Text(line) for line in catalog_notes(catalog)))


def catalog_notes(catalog: Catalog) -> list[str]:
    """What the table cannot say: bands, fast mode, lifecycle, unconfirmed facts."""
    lines: list[str] = []
    for info in catalog.models.values():
        lines += [f"  {info.id}: {note}" for note in _model_notes(info)]
    return [
        "Notes:",
        *lines,
        f"{THIRD_PARTY_MARK} from third-party price trackers only (not confirmed by Anthropic)",
        f"{ASSUMED_MARK} not published: llmflow's working value",
        "Override any price or limit per tier in a policy.",
        f"Source: {catalog.source('pricing')}",
    ]


def _model_notes(info: ModelInfo) -> list[str]:
    from llmflow.catalog import format_usd

    notes: list[str] = []
    for band in info.bands:
        p = info.prices(prompt_tokens=band.above_prompt_tokens + 1)
        notes.append(
            f"prompts above {band.above_prompt_tokens:,} tokens: every category at"
            f" {format_usd(p.input)} in / {format_usd(p.output)} out"
        )
    if info.fast is not None:
        fast = info.prices(speed="fast")
        until = f", until {info.fast.until.isoformat()}" if info.fast.until else ""
        flag = THIRD_PARTY_MARK if "fast" in info.third_party else ""
        notes.append(
            f"fast mode{flag} {format_usd(fast.input)} in / {format_usd(fast.output)} out{until}"
        )
    if info.status in ("deprecated", "retired") and info.retires_at is not None:
        verb = "retired" if info.status == "retired" else "retires"
        instead = f"; use {info.replacement}" if info.replacement else ""
        notes.append(f"{verb} {info.retires_at.isoformat()}{instead}")
    unshown = [f for f in info.third_party if not _shown(f)]
    unshown = [f for f in unshown if f != "fast" or info.fast is None]
    if unshown:
        notes.append(f"third-party{THIRD_PARTY_MARK}: {', '.join(unshown)}")
    return notes


def _shown(field: str) -> bool:
    return any(field in fields for fields in _COLUMN_FIELDS.values())


def drift_table(drifts: Sequence[Drift], checked: int) -> RenderableType:
    """The drift report for people."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    if not drifts:
        return Text(f"no drift: the catalog matches the Models API ({checked} models listed)")
    table = Table(
        box=box.SIMPLE_HEAD,
        title=f"{len(drifts)} difference(s) between the catalog and the Models API",
        title_justify="left",
        header_style="bold",
    )
    for column in ("model", "field", "catalog", "Models API"):
        table.add_column(column, overflow="fold")
    for drift in drifts:
        table.add_row(
            drift.model, drift.field, _shown_value(drift.catalog), _shown_value(drift.api)
        )
    return table


def _shown_value(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "none"
    return "null" if value is None else str(value)


async def _check(backend: Backend, catalog: Catalog) -> tuple[list[Drift], int]:
    from llmflow.cli._backend import client_for
    from llmflow.cli._model_drift import compare, list_models

    client = client_for(backend.value)
    try:
        listed = await list_models(client)
    finally:
        await client.close()
    return compare(catalog, listed), len(listed)


_HELP = (
    "Show the model catalog: lifecycle, limits, prices per million tokens, capabilities.\n\n"
    "--check compares the catalog with the live Models API of --backend and lists every"
    " difference (models added or gone, lifecycle and retirement dates, context window,"
    " maximum output, effort levels, thinking types, structured outputs). Exit 0 when"
    " they agree, 1 on drift, 2 on bad usage, 4 when the backend is unusable."
    " Examples:\n\n"
    "llmflow models\n\n"
    "llmflow models --format json\n\n"
    "llmflow models --check --backend emulator"
)


@app.command("models", help=_HELP)
def models(
    output_format: ModelsFormat = typer.Option(
        ModelsFormat.table,
        "--format",
        help="table (for people) or json (every field, prices as decimal strings).",
    ),
    check: bool = typer.Option(
        False, "--check", help="Compare the catalog with the live Models API (no prices)."
    ),
    backend: Backend = typer.Option(
        Backend.anthropic,
        "--backend",
        help="Where --check lists models: anthropic (needs ANTHROPIC_API_KEY) or emulator"
        " (in-process, no key). Ignored without --check.",
    ),
) -> None:
    """Show the model catalog, or with --check its drift from the Models API."""
    import asyncio

    from llmflow.cli._errors import reported_errors
    from llmflow.cli._inputs import table_console

    catalog = load_catalog()
    if not check:
        if output_format is ModelsFormat.json:
            entries = [model_json(info, catalog) for info in catalog.models.values()]
            typer.echo(json.dumps(entries, indent=2))
        else:
            table_console().print(catalog_table(catalog))
        return
    with reported_errors():
        drifts, checked = asyncio.run(_check(backend, catalog))
    if output_format is ModelsFormat.json:
        typer.echo(json.dumps([d.as_json() for d in drifts], indent=2))
    else:
        table_console().print(drift_table(drifts, checked))
    raise typer.Exit(1 if drifts else 0)
