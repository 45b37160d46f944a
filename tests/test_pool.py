"""The adaptive thread pool: how many tasks run at once, on which threads, and its
limit from measured waits and CPU (a real worker runs it in test_run_e2e)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import CancelledError

import pytest

from newsq.admission import FLOOR, OUTLIER, PRIOR_CPU_S, SAMPLE_TASKS, Admission, CpuLane
from workers.pool import AdaptiveExecutor


class Probe:
    """A task that records how many of its kind run at once and on which thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.threads: set[int] = set()

    def __call__(self, seconds: float, value: int) -> int:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.threads.add(threading.get_ident())
        time.sleep(seconds)
        with self.lock:
            self.now -= 1
        return value * 2


def test_limit_is_the_floor_until_a_wait_is_measured() -> None:
    admission = Admission(ceiling=16)
    assert admission.limit == FLOOR
    admission.worked(0.5)  # CPU alone says nothing about waits
    assert admission.limit == FLOOR


def test_limit_follows_littles_law_within_floor_and_ceiling() -> None:
    admission = Admission(ceiling=16)
    for _ in range(50):
        admission.waited(0.002)  # a fast site: 2 ms on the network, 20 ms on the CPU
        admission.worked(0.02)
    assert admission.limit == 2  # ceil(1.5 * 1.1)
    for _ in range(50):
        admission.waited(0.06)  # 60 ms: 1 + 3 in flight keep the core busy
    assert admission.limit == 6  # ceil(1.5 * 4)
    for _ in range(50):
        admission.waited(2.0)
    assert admission.limit == 16
    assert Admission(ceiling=1).limit == 1


def test_a_cold_first_task_counts_as_at_most_outlier_times_the_average() -> None:
    admission = Admission(ceiling=64)
    admission.worked(5.0)  # lazy start-up in the process's first task
    assert admission.cpu_s <= PRIOR_CPU_S * (1 + OUTLIER)
    admission.waited(0.2)
    assert admission.limit >= 6  # still opens for a slow site


def test_cpu_per_task_is_the_process_cpu_over_finished_tasks() -> None:
    admission = Admission(ceiling=16)

    def burn(seconds: float) -> None:
        end = time.process_time() + seconds
        while time.process_time() < end:
            pass

    for _ in range(SAMPLE_TASKS):
        burn(0.06)  # 60 ms of CPU per task, against a prior of 20 ms
        admission.finished()
    assert PRIOR_CPU_S < admission.cpu_s < 0.06
    before = admission.cpu_s
    for _ in range(SAMPLE_TASKS - 1):
        admission.finished()  # no sample until SAMPLE_TASKS tasks finished
    assert admission.cpu_s == before


def test_runs_at_most_limit_at_once_and_returns_every_result() -> None:
    executor = AdaptiveExecutor(16, Admission(ceiling=16))  # no wait measured: limit 2
    probe = Probe()
    futures = [executor.submit(probe, 0.01, i) for i in range(20)]
    assert [f.result(timeout=10) for f in futures] == [2 * i for i in range(20)]
    assert probe.most == 2
    assert len(probe.threads) == 2  # the same two threads took every task
    executor.shutdown()


def test_more_run_at_once_when_waits_are_long() -> None:
    admission = Admission(ceiling=8)
    for _ in range(20):
        admission.waited(1.0)
    executor = AdaptiveExecutor(8, admission)
    probe = Probe()
    futures = [executor.submit(probe, 0.05, i) for i in range(16)]
    for f in futures:
        f.result(timeout=10)
    assert probe.most == 8
    executor.shutdown()


def test_the_warmest_thread_takes_the_next_task() -> None:
    executor = AdaptiveExecutor(8, Admission(ceiling=8))
    probe = Probe()
    for i in range(30):  # one at a time: the thread that just finished runs the next one
        executor.submit(probe, 0, i).result(timeout=10)
    assert len(probe.threads) == 1
    executor.shutdown()


def test_exceptions_reach_the_future() -> None:
    executor = AdaptiveExecutor(2, Admission(ceiling=2))

    def boom() -> None:
        raise ValueError("bad page")

    with pytest.raises(ValueError, match="bad page"):
        executor.submit(boom).result(timeout=10)
    assert executor.submit(lambda: 7).result(timeout=10) == 7  # the thread survived
    executor.shutdown()


def test_shutdown_finishes_running_tasks_and_cancels_queued_ones() -> None:
    executor = AdaptiveExecutor(4, Admission(ceiling=4))  # limit 2
    release = threading.Event()
    running = [executor.submit(release.wait, 10) for _ in range(2)]
    queued = [executor.submit(lambda: 1) for _ in range(3)]
    stopper = threading.Thread(target=executor.shutdown)
    stopper.start()
    time.sleep(0.05)
    release.set()
    stopper.join(timeout=10)
    assert not stopper.is_alive()
    assert all(f.result(timeout=1) is True for f in running)
    for f in queued:
        with pytest.raises(CancelledError):
            f.result(timeout=1)
    assert not any(t.is_alive() for t in executor._threads)
    with pytest.raises(RuntimeError):
        executor.submit(lambda: 1)


def test_the_cpu_lane_runs_every_callers_work_on_one_thread() -> None:
    lane = CpuLane()
    seen: set[int] = set()

    def work(i: int) -> int:
        seen.add(threading.get_ident())
        return i + 1

    callers = AdaptiveExecutor(8, Admission(ceiling=8))
    futures = [callers.submit(lane.run, work, i) for i in range(20)]
    assert [f.result(timeout=10) for f in futures] == list(range(1, 21))
    assert len(seen) == 1 and threading.get_ident() not in seen

    def boom() -> None:
        raise KeyError("lost")

    with pytest.raises(KeyError):
        lane.run(boom)
    callers.shutdown()
    lane.close()
