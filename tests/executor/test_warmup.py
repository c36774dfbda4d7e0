from __future__ import annotations

import asyncio

from llmflow.executor.warmup import WarmGate


async def test_one_leader_then_followers_go_together() -> None:
    gate = WarmGate()
    order: list[str] = []

    async def request(name: str) -> None:
        if await gate.enter("prefix"):
            order.append(f"lead:{name}")
            await asyncio.sleep(0.01)
            gate.opened("prefix")
        else:
            order.append(f"follow:{name}")

    await asyncio.gather(*(request(str(i)) for i in range(5)))
    assert order[0] == "lead:0"
    assert sorted(order[1:]) == [f"follow:{i}" for i in range(1, 5)]


async def test_a_failed_leader_hands_over_to_one_waiter() -> None:
    gate = WarmGate()
    leaders: list[int] = []

    async def request(i: int) -> None:
        if await gate.enter("k"):
            leaders.append(i)
            await asyncio.sleep(0)
            if len(leaders) == 1:
                gate.failed("k")
            else:
                gate.opened("k")

    await asyncio.gather(*(request(i) for i in range(4)))
    assert len(leaders) == 2
