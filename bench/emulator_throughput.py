"""Requests/s the emulator sustains on loopback.

The emulator runs in its own process (``llmflow emulator``, uvicorn + h11); the load
comes from this process: 64 concurrent ``AsyncAnthropic`` clients, then 64 concurrent
raw ``httpx2`` workers posting the same body (separating server capacity from SDK
overhead). Each phase is bounded in request count and in time. The server's CPU use
during each phase (from /proc) shows which side is the bottleneck: a server below
one full core is waiting for the client.

    .venv/bin/python bench/emulator_throughput.py [--requests N] [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anthropic
import httpx2

CONCURRENCY = 64
MODEL = "claude-haiku-4-5"
MESSAGES = [{"role": "user", "content": "Classify this ticket: the invoice total is wrong."}]
BODY = {"model": MODEL, "max_tokens": 16, "messages": MESSAGES}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(port: int) -> subprocess.Popen[bytes]:
    code = "import sys; from llmflow.cli import main; sys.argv[0] = 'llmflow'; main()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "emulator", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("emulator did not start within 20 s")


async def drive(
    worker: Callable[[int], Awaitable[None]], total: int, seconds: float
) -> tuple[int, float]:
    """Run ``CONCURRENCY`` loops of ``worker`` until ``total`` requests or ``seconds``."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def loop(i: int) -> None:
        nonlocal done
        while done < total and time.perf_counter() < deadline:
            done += 1
            await worker(i)

    start = time.perf_counter()
    await asyncio.gather(*(loop(i) for i in range(CONCURRENCY)))
    return done, time.perf_counter() - start


async def sdk_phase(url: str, total: int, seconds: float) -> tuple[int, float]:
    clients = [
        anthropic.AsyncAnthropic(api_key="bench", base_url=url, max_retries=0)
        for _ in range(CONCURRENCY)
    ]

    async def one(i: int) -> None:
        await clients[i].messages.create(model=MODEL, max_tokens=16, messages=MESSAGES)  # type: ignore[arg-type]

    await drive(one, CONCURRENCY * 2, 10)  # warm-up
    result = await drive(one, total, seconds)
    for client in clients:
        await client.close()
    return result


async def raw_phase(url: str, total: int, seconds: float) -> tuple[int, float]:
    limits = httpx2.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    headers = {"x-api-key": "bench", "anthropic-version": "2023-06-01"}
    async with httpx2.AsyncClient(base_url=url, limits=limits, headers=headers) as client:

        async def one(i: int) -> None:
            response = await client.post("/v1/messages", json=BODY)
            response.raise_for_status()

        await drive(one, CONCURRENCY * 2, 10)
        return await drive(one, total, seconds)


async def socket_phase(port: int, total: int, seconds: float) -> tuple[int, float]:
    """Keep-alive HTTP/1.1 over plain asyncio sockets: the cheapest client there is."""
    payload = json.dumps(BODY).encode()
    request = (
        b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: bench\r\n"
        b"anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload
    )
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(CONCURRENCY)]

    async def one(i: int) -> None:
        reader, writer = conns[i]
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head[:64].decode())
        at = head.lower().index(b"content-length: ") + 16
        await reader.readexactly(int(head[at : head.index(b"\r\n", at)]))

    await drive(one, CONCURRENCY * 2, 10)
    result = await drive(one, total, seconds)
    for _, writer in conns:
        writer.close()
    return result


def report(name: str, pid: int, phase: Callable[[], tuple[int, float]]) -> None:
    cpu_before = cpu_seconds(pid)
    done, elapsed = phase()
    server_cpu = (cpu_seconds(pid) - cpu_before) / elapsed
    print(
        f"{name:<34} {done:>6} requests in {elapsed:6.2f} s = {done / elapsed:8.1f} req/s"
        f"   (server CPU {server_cpu * 100:5.1f}% of one core)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=15_000, help="per phase (upper bound)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per phase (upper bound)")
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(port)
    try:
        print(
            f"emulator pid {proc.pid} on {url}; {CONCURRENCY} concurrent clients;"
            f" {os.cpu_count()} CPUs"
        )
        report(
            "AsyncAnthropic x64 (SDK)",
            proc.pid,
            lambda: asyncio.run(sdk_phase(url, args.requests, args.seconds)),
        )
        report(
            "raw httpx2, 64 workers",
            proc.pid,
            lambda: asyncio.run(raw_phase(url, args.requests, args.seconds)),
        )
        report(
            "raw asyncio sockets, 64 conns",
            proc.pid,
            lambda: asyncio.run(socket_phase(port, args.requests, args.seconds)),
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
