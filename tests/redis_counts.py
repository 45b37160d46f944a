"""What a real Redis did, read from its own counters."""

from __future__ import annotations

import redis


def commands_run(client: redis.Redis) -> int:
    """Commands the server ran so far (scripts' own commands included), less INFO's."""
    stats: dict[str, dict[str, int]] = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")
