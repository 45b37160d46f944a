"""A worker process's resources: made at start-up (warm_up), shared by its tasks."""

from __future__ import annotations

import dataclasses

import pytest
import redis

from newsq.config.settings import Settings
from newsq.resources import Runtime


def test_warm_up_makes_every_resource_before_the_first_task(settings: Settings) -> None:
    rt = Runtime(settings)
    try:
        rt.warm_up()
        made = set(rt._made)
        assert {"redis", "ledger", "store", "fetcher", "politeness", "dedup"} <= made
        assert "boilerplate" in made and "robots" in made  # robots is on by default
        store = rt.store
        rt.warm_up()  # a second call reuses what was made
        assert rt.store is store
    finally:
        rt.close()


def test_warm_up_raises_when_redis_is_unreachable(settings: Settings) -> None:
    unreachable = dataclasses.replace(settings, broker_url="redis://127.0.0.1:1/0")
    rt = Runtime(unreachable)
    with pytest.raises(redis.ConnectionError):
        rt.warm_up()
    rt.close()
