"""Several workers forked from one process that imported and warmed the pipeline
(``newsq run``'s, by :mod:`newsq.workers.prestart`): they share that work, and its
memory, instead of each paying it on the same cores (a second or more of CPU a worker).

The forks stay in the process group of the one that forked them, so a signal to the
group reaches them all; it waits for them and exits when the last has, with the first
non-zero status (one that exits unasked stops the others, as the run would). Worker i
of a metrics port P serves on P + i.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

from newsq.workers.redis_server import die_with_parent

APART = "::"
"""Between the arguments of two workers on the command line."""

STOPS = {signal.SIGTERM, signal.SIGINT}


def leave(code: int) -> NoReturn:
    """End a worker of ``newsq run`` that has stopped: its exit handlers run (the
    throughput series' last counts, logging's flush), not the interpreter's teardown of
    every module and object, a quarter of a second the run would wait for."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def split(argv: list[str]) -> list[list[str]]:
    """The command lines of the workers in ``argv`` (``worker ARGS :: ARGS ...``)."""
    command, *rest = argv
    workers: list[list[str]] = [[command]]
    for arg in rest:
        if arg == APART:
            workers.append([command])
        else:
            workers[-1].append(arg)
    return workers


def fork_workers(workers: list[list[str]], run: Callable[[list[str]], int]) -> NoReturn:
    """``run`` each command line in a fork of this process, which then leaves with its
    status (:func:`leave`); once all have exited, this one leaves with
    :func:`reap`'s."""
    # blocked until each fork has its own handlers: a stop sent to the group while it
    # forks reaches every worker, none runs this process's handler instead
    signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
    asked: list[bool] = []  # a stop came (to the group: the workers have it too)
    for stop in STOPS:
        signal.signal(stop, lambda *_: asked.append(True))
    port = os.environ.get("NEWSQ_METRICS_PORT")
    children = []
    for i, worker in enumerate(workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)
            die_with_parent()
            if port:
                os.environ["NEWSQ_METRICS_PORT"] = str(int(port) + i)
            leave(run(worker))
        children.append(pid)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)
    leave(reap(children, asked))


def reap(children: list[int], asked: list[bool]) -> int:
    """Reap ``children``: the first non-zero status once all have exited. A worker that
    exits before a stop was ``asked`` stops the others (a warm shutdown, as the run
    would), and its status is the one given (1 for 0: it was not asked to go)."""
    left, code = set(children), 0
    while left:
        pid, status = os.wait()
        left.discard(pid)
        own = os.waitstatus_to_exitcode(status)
        if not asked:
            asked.append(True)
            own = own or 1
            for other in left:
                os.kill(other, signal.SIGTERM)
        code = code or own
    return code
