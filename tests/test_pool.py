"""The adaptive thread pool: how many tasks run at once and on which threads (a real
worker runs it in test_run_e2e and the fault tests)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import CancelledError

import pytest

from newsq.workers.admission import ACTIVE, OUTLIER, PRIOR_CPU_S, SAMPLE_TASKS, Admission, CpuLane
from newsq.workers.pool import AdaptiveExecutor


class Probe:
    """A task that records how many of its kind run at once and on which thread;
    ``network`` seconds of it are spent as a network wait."""

    def __init__(self, admission: Admission | None = None) -> None:
        self.admission = admission
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.threads: set[int] = set()

    def __call__(self, seconds: float, value: int, network: float = 0.0, cpu: float = 0) -> int:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.threads.add(threading.get_ident())
        time.sleep(seconds)
        end = time.thread_time() + cpu
        while time.thread_time() < end:  # CPU work, as a page's cleaning
            pass
        if network and self.admission is not None:
            with self.admission.network_wait():
                time.sleep(network)
        with self.lock:
            self.now -= 1
        return value * 2


def test_limit_follows_littles_law_from_the_measured_averages() -> None:
    admission = Admission()
    assert admission.limit == ACTIVE  # nothing measured yet
    for _ in range(60):
        with admission.network_wait():
            time.sleep(0.002)  # a fast site: ~2 ms waits, 20 ms of CPU (the prior)
    assert admission.limit == ACTIVE
    admission.wait_s = 0.06  # 60 ms: 1 + 3 tasks in flight keep the core busy
    assert admission.limit == 6  # ceil(1.5 * 4)
    assert admission.may_start(5) and not admission.may_start(6)
    admission._waits.update({object(): 0.0 for _ in range(5)})  # 5 long-waiting requests
    assert admission.waiting() == 5
    assert admission.may_start(6)  # ... most of the running tasks wait on the network


def test_a_cold_first_cpu_sample_counts_as_at_most_outlier_times_the_average() -> None:
    admission = Admission()
    admission.worked(5.0)  # lazy start-up in the process's first tasks
    assert admission.cpu_s <= PRIOR_CPU_S * (1 + OUTLIER)


def test_cpu_per_task_is_the_process_cpu_over_finished_tasks() -> None:
    admission = Admission()

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


def test_without_network_waits_only_the_active_few_run() -> None:
    executor = AdaptiveExecutor(16, Admission())
    probe = Probe()
    futures = [executor.submit(probe, 0.01, i) for i in range(20)]
    assert [f.result(timeout=10) for f in futures] == [2 * i for i in range(20)]
    assert probe.most == ACTIVE
    assert len(probe.threads) == ACTIVE  # the same threads took every task
    executor.shutdown()


def test_tasks_waiting_on_the_network_make_room_up_to_the_pool_size() -> None:
    admission = Admission()
    executor = AdaptiveExecutor(8, admission)
    probe = Probe(admission)
    futures = [executor.submit(probe, 0, i, 0.2) for i in range(24)]
    for f in futures:
        f.result(timeout=10)
    assert probe.most == 8
    assert admission.waiting() == 0 and not admission._waits
    executor.shutdown()


def test_short_waits_do_not_open_the_pool() -> None:
    admission = Admission()
    executor = AdaptiveExecutor(16, admission)
    probe = Probe(admission)
    # 5 ms waits, 10 ms of CPU: Little's law wants ceil(1.5 * 1.5) = 3 running; with no
    # limit at all 7-9 ran at once here. A loaded machine stretches the sleeps, which
    # then measure (and count) as longer waits: 4 ran at once in one CI run of the
    # suite's two processes on two cores
    futures = [executor.submit(probe, 0, i, 0.005, 0.01) for i in range(40)]
    for f in futures:
        f.result(timeout=30)
    assert probe.most <= 5
    executor.shutdown()


def test_hanging_requests_do_not_starve_the_queue() -> None:
    admission = Admission()
    executor = AdaptiveExecutor(8, admission)
    release = threading.Event()

    def hang() -> None:
        with admission.network_wait():
            release.wait(10)

    hanging = [executor.submit(hang) for _ in range(4)]
    quick = [executor.submit(lambda i=i: i) for i in range(10)]
    assert [f.result(timeout=5) for f in quick] == list(range(10))  # while 4 still hang
    release.set()
    for f in hanging:
        f.result(timeout=5)
    executor.shutdown()


def test_the_warmest_thread_takes_the_next_task() -> None:
    executor = AdaptiveExecutor(8, Admission())
    probe = Probe()
    for i in range(30):  # one at a time: the thread that just finished runs the next one
        executor.submit(probe, 0, i).result(timeout=10)
    assert len(probe.threads) == 1
    executor.shutdown()


def test_exceptions_reach_the_future() -> None:
    executor = AdaptiveExecutor(2, Admission())

    def boom() -> None:
        raise ValueError("bad page")

    with pytest.raises(ValueError, match="bad page"):
        executor.submit(boom).result(timeout=10)
    assert executor.submit(lambda: 7).result(timeout=10) == 7  # the thread survived
    executor.shutdown()


def test_a_batch_runs_its_parts_side_by_side_in_its_own_place() -> None:
    """8 parts that each wait 0.2 s on the network take ~0.2 s, not 1.6 s: the batch
    leaves its place to them and they are admitted as tasks."""
    admission = Admission()
    admission.wait_s = 0.2  # slow sites: Little's law admits many at once
    executor = AdaptiveExecutor(16, admission)
    probe = Probe(admission)

    def batch() -> list[int]:
        return executor.side_by_side(lambda i: probe(0, i, 0.2), range(8))

    started = time.perf_counter()
    assert executor.submit(batch).result(timeout=10) == [i * 2 for i in range(8)]
    assert time.perf_counter() - started < 1.0
    assert probe.most == 8
    assert executor.running == 0
    executor.shutdown()


def test_parts_of_a_batch_are_counted_as_tasks_and_the_batch_is_not() -> None:
    admission = Admission()
    executor = AdaptiveExecutor(4, admission)
    batch = lambda: executor.side_by_side(lambda i: i, range(5))  # noqa: E731
    assert executor.submit(batch).result(timeout=10) == list(range(5))
    assert admission._tasks == 5
    executor.shutdown()


def test_batches_that_fill_every_thread_still_finish() -> None:
    """A pool of 2 threads, both running batches that wait on their parts: the batch
    runs the parts nobody took in its own place."""
    executor = AdaptiveExecutor(2, Admission())

    def part(name: str) -> str:
        time.sleep(0.01)
        return name

    def batch(b: int) -> list[str]:
        return executor.side_by_side(part, [f"{b}.{i}" for i in range(3)])

    futures = [executor.submit(batch, b) for b in range(6)]
    assert [f.result(timeout=20) for f in futures] == [
        [f"{b}.{i}" for i in range(3)] for b in range(6)
    ]
    executor.shutdown()


def test_a_batchs_parts_start_before_tasks_queued_after_it() -> None:
    executor = AdaptiveExecutor(4, Admission())  # 2 at once
    started: list[str] = []
    pushed = threading.Event()

    def note(name: str) -> None:
        started.append(name)
        pushed.set()
        time.sleep(0.02)

    batch = executor.submit(lambda: executor.side_by_side(note, [f"part{i}" for i in range(6)]))
    assert pushed.wait(5)  # the batch runs: its parts are queued
    later = [executor.submit(note, f"task{i}") for i in range(4)]
    batch.result(timeout=10)
    for f in later:
        f.result(timeout=10)
    assert sorted(started[:6]) == [f"part{i}" for i in range(6)]
    executor.shutdown()


def test_shutdown_lets_running_batches_finish_every_part() -> None:
    """A worker's warm shutdown: a batch that runs is a running task, so all its parts
    run (none cancelled, which would fail the batch and ack URLs never done)."""
    admission = Admission()
    admission.wait_s = 0.1
    executor = AdaptiveExecutor(8, admission)
    started = threading.Event()

    def part(i: int) -> int:
        started.set()
        with admission.network_wait():
            time.sleep(0.05 + 0.05 * (i % 3))
        return i

    batches = [executor.submit(executor.side_by_side, part, range(4)) for _ in range(12)]
    assert started.wait(5)
    stopper = threading.Thread(target=executor.shutdown)
    stopper.start()
    stopper.join(timeout=20)
    assert not stopper.is_alive()
    ran = [b for b in batches if not b.cancelled()]
    assert ran and all(b.result(timeout=1) == [0, 1, 2, 3] for b in ran)
    assert any(b.cancelled() for b in batches)  # the queued ones never started


def test_a_failing_part_fails_its_batch_after_the_others_finished() -> None:
    executor = AdaptiveExecutor(4, Admission())
    done: list[int] = []

    def part(i: int) -> int:
        if i == 1:
            raise ValueError("bad part")
        time.sleep(0.05)
        done.append(i)
        return i

    with pytest.raises(ValueError, match="bad part"):
        executor.submit(lambda: executor.side_by_side(part, range(4))).result(timeout=10)
    assert sorted(done) == [0, 2, 3]
    with pytest.raises(RuntimeError, match="from a task of this pool"):
        executor.side_by_side(part, [0])  # not on a pool thread
    executor.shutdown()


def test_shutdown_finishes_running_tasks_and_cancels_queued_ones() -> None:
    executor = AdaptiveExecutor(4, Admission())  # 2 at once
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

    callers = AdaptiveExecutor(8, Admission())
    futures = [callers.submit(lane.run, work, i) for i in range(20)]
    assert [f.result(timeout=10) for f in futures] == list(range(1, 21))
    assert len(seen) == 1 and threading.get_ident() not in seen

    def boom() -> None:
        raise KeyError("lost")

    with pytest.raises(KeyError):
        lane.run(boom)
    callers.shutdown()
    lane.close()


def test_batches_share_messages_only_in_a_surge() -> None:
    from newsq.feeds.intake import BATCH_SPREAD, batches

    few = [f"u{i}" for i in range(2 * BATCH_SPREAD - 1)]
    assert batches(few, 8) == [[u] for u in few]  # one URL per message
    many = [f"u{i}" for i in range(605)]
    sent = batches(many, 8)
    assert [u for b in sent for u in b] == many and {len(b) for b in sent[:-1]} == {8}
    assert {len(b) for b in batches(many[:300], 8)} == {4}
    assert batches(many, 1) == [[u] for u in many]  # NEWSQ_FETCH_BATCH=1: never shared


def test_fresh_tasks_start_before_bulk_ones_reserved_earlier() -> None:
    executor = AdaptiveExecutor(4, Admission(active=1))  # one at a time: a strict order
    release = threading.Event()
    started: list[str] = []
    blocker = executor.submit(release.wait, 10)
    later = [executor.submit_bulk(started.append, f"bulk{i}") for i in range(3)]
    later += [executor.submit(started.append, f"fresh{i}") for i in range(2)]
    release.set()
    for f in [blocker, *later]:
        f.result(timeout=10)
    assert started == ["fresh0", "fresh1", "bulk0", "bulk1", "bulk2"]
    executor.shutdown()


def test_celerys_request_of_the_bulk_lane_is_queued_as_bulk() -> None:
    from newsq.config.celery import BULK, FRESH
    from newsq.workers.pool import _is_bulk

    def trace_args(priority: int | None) -> tuple[object, ...]:  # as Request passes them
        request = {"id": "x", "delivery_info": {"routing_key": "fetch", "priority": priority}}
        return ("newsq.fetch", "x", request, b"[]", "application/json", "utf-8")

    assert _is_bulk(trace_args(BULK))
    assert not _is_bulk(trace_args(FRESH)) and not _is_bulk(trace_args(None))
    assert not _is_bulk(None) and not _is_bulk(("newsq.fetch",))
