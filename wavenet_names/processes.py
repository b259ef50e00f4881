"""An ensemble's models trained several at once, each in a process of its own: a pool that passes
Ctrl-C on to its processes, so that each saves its run and stops, and that notices a process that
died without a word.
"""

import multiprocessing
import os
import pickle
import queue
import signal
import threading
from collections.abc import Callable

import torch

from .fitting import TrainingInterrupted


def run_at_once(run: Callable[..., dict], jobs: list[tuple], processes: int) -> list[dict]:
    """run(*job) for every job, `processes` of them at a time, each in a process of its own (spawned:
    a fresh interpreter, with none of this one's thread pools) with its share of this process's CPU
    threads; their results in order. A job's exception is raised here. Ctrl-C here is passed on to the
    running jobs, which save and stop (as run's runner does); none starts, and their
    TrainingInterrupted is raised here."""
    spawn = multiprocessing.get_context("spawn")
    threads = max(1, torch.get_num_threads() // processes)
    results = spawn.Queue()  # (job index, run's metrics or the exception it raised)
    running, done, waiting = {}, {}, list(enumerate(jobs))
    try:
        while waiting or running:
            while waiting and len(running) < processes:
                index, job = waiting.pop(0)
                running[index] = spawn.Process(target=_run_job, args=(run, index, job, threads, results))
                running[index].start()
            index, result = next_result(results, running)
            running.pop(index).join()
            done[index] = result
            if isinstance(result, BaseException):
                break  # no new job; the running ones end as their own runs do
    except KeyboardInterrupt:  # Ctrl-C: each running job saves and stops (see _run_job)
        for process in running.values():
            if process.is_alive():
                os.kill(process.pid, signal.SIGINT)
    waiting.clear()
    while running:  # the running jobs finish or save and stop
        index, result = next_result(results, running)
        running.pop(index).join()
        done[index] = result
    failures = [r for r in done.values() if isinstance(r, BaseException)]
    interrupted = [r for r in failures if isinstance(r, TrainingInterrupted)]
    if interrupted or failures:
        raise (interrupted or failures)[0]
    return [done[i] for i in range(len(jobs))]


def _stop_when_orphaned() -> None:
    """Should the parent die (SIGKILL), stop this job as Ctrl-C does, saving its run, rather than train
    on unwatched."""
    multiprocessing.parent_process().join()
    os.kill(os.getpid(), signal.SIGINT)


def next_result(results, running: dict) -> tuple[int, object]:
    """The next (job index, result) from run_at_once's processes; an error as the result of one that
    died without one (killed, or out of memory), so that the others are not waited for in vain."""
    while True:
        try:
            return results.get(timeout=1.0)
        except queue.Empty:
            for index, process in running.items():
                if process.exitcode not in (None, 0):
                    return index, ChildProcessError(
                        f"the process training member {index + 1} died (exit code {process.exitcode})"
                    )


def _run_job(run: Callable[..., dict], index: int, job: tuple, threads: int, results) -> None:
    """In a process of run_at_once's: run(*job), its result (or exception) into `results`."""
    # Signals come from the parent alone, once: in a process group of its own, a terminal's Ctrl-C
    # (which the parent passes on) does not reach this process a second time, which would stop it unsaved
    if hasattr(os, "setpgid"):  # POSIX
        os.setpgid(0, 0)
    threading.Thread(target=_stop_when_orphaned, daemon=True).start()
    torch.set_num_threads(threads)
    try:
        result = run(*job)
    except BaseException as e:  # Ctrl-C, a bad option, ...: raised again in the parent
        try:
            pickle.dumps(e)
            result = e
        except Exception:  # not every exception survives the trip: its type and message do
            result = RuntimeError(f"{type(e).__name__}: {e}")
    results.put((index, result))
