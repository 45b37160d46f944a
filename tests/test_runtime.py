"""A worker process's resources: made at start-up (warm_up), shared by its tasks."""

from __future__ import annotations

import dataclasses
import threading

import pytest
import redis

from newsq.config.settings import Settings
from newsq.resources import AnyPool, Runtime


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


def test_outside_newsqs_pool_a_runtime_runs_everything_in_place(settings: Settings) -> None:
    rt = Runtime(settings)
    assert isinstance(rt.pool, AnyPool)
    assert rt.pool.lane is None and rt.pool.side_by_side is None  # a batch goes on URL by URL
    with rt.pool.network_wait():
        pass
    assert rt.on_cpu(threading.get_ident) == threading.get_ident()


def test_newsqs_pool_hands_the_runtime_its_lane_admission_and_batches(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from newsq.tasks import context
    from newsq.workers.pool import TaskPool

    rt = Runtime(settings)
    monkeypatch.setattr(context, "_runtime", rt)  # the process's runtime
    pool = TaskPool(limit=4)
    pool.start()
    try:
        assert rt.pool is pool
        assert rt.on_cpu(threading.current_thread).name.startswith("newsq-cpu")
        with rt.pool.network_wait():
            assert len(pool.admission._waits) == 1  # the pool's own admission sees it
        side_by_side = rt.pool.side_by_side
        assert side_by_side is not None
        batch = pool.executor.submit(side_by_side, lambda i: 2 * i, [1, 2, 3])
        assert batch.result(timeout=10) == [2, 4, 6]
    finally:
        pool.stop()
    assert isinstance(rt.pool, AnyPool)  # a stopped pool runs nothing more
    rt.close()
