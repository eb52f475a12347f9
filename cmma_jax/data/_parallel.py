"""Ordered parallel map for prepare-time work (rendering, decoding) in worker processes.

The results come back in input order whatever the number of workers, so a prepared dataset does
not depend on how many processes built it.

Start method: "fork" where the platform has it (Linux). Preparation runs implicitly on first use,
often from a user's script, and "spawn" or "forkserver" children re-import the main script: an
unguarded script (no `if __name__ == "__main__":`) would then start preparing again in every
child. A forked child runs only the work functions, which live in modules that import nothing
but numpy and Pillow and never touch JAX, so JAX's threads in the parent (the reason JAX warns
about fork) cannot deadlock it; that warning is silenced for these pools only. Elsewhere
(macOS, Windows) "spawn" is used, and the main script must be guarded as usual.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import warnings
from typing import Callable, Iterator, Sequence, TypeVar

_T = TypeVar("_T")
_R = TypeVar("_R")

PARENT_POLL_S = 0.2  # how often a worker process checks that its parent is alive
_watching = False


def exit_with_parent(parent_pid: int) -> None:
    """Makes this process exit as soon as `parent_pid`, its parent, is gone.

    For worker processes (prepare-time pools, grain's loader workers): a parent killed with
    SIGKILL cannot stop its workers, and grain's workers, blocked on a queue nobody reads, would
    otherwise live on for minutes. A daemon thread checks every `PARENT_POLL_S` seconds that the
    parent is still this process's parent (an orphan is re-parented to init or a subreaper) and
    ends the process with `os._exit` if not. Does nothing in a process that is not a child of
    `parent_pid` (or in the parent itself); idempotent.

    (Linux's `prctl(PR_SET_PDEATHSIG)` is not used: it fires when the *thread* that started the
    child ends, and grain starts its workers from threads of a thread pool, which may end first.)
    """
    global _watching
    if os.getpid() == parent_pid or _watching:
        return
    parent = multiprocessing.parent_process()
    if parent is not None:  # a multiprocessing child: knows its parent even if already gone
        if parent.pid != parent_pid:
            return
    elif os.getppid() != parent_pid:  # not our child, or the parent died already: unknowable
        return
    _watching = True

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os._exit(1)  # pylint: disable=protected-access

    threading.Thread(target=watch, name="exit_with_parent", daemon=True).start()


def default_num_workers(num_items: int, *, min_items: int = 2000) -> int:
    """Worker processes for `num_items` units: none for small jobs (start-up would dominate)."""
    if num_items < min_items:
        return 0
    return max(0, min(os.cpu_count() or 1, 8))


def ordered_map(
    fn: Callable[[_T], list[_R]], chunks: Sequence[_T], num_workers: int
) -> Iterator[_R]:
    """Yields the items of `fn(chunk)` for each chunk, in order.

    Args:
        fn: a module-level (picklable) function from one chunk to a list of results.
        chunks: the work, split into chunks (a few hundred items each keeps overhead low).
        num_workers: worker processes; 0 runs everything in this process.

    Yields:
        The results of every chunk, concatenated in chunk order.
    """
    if num_workers <= 0 or len(chunks) <= 1:
        for chunk in chunks:
            yield from fn(chunk)
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning
        )
        warnings.filterwarnings(
            "ignore",
            message=r".*use of fork\(\) may lead to deadlocks",
            category=DeprecationWarning,
        )
        pool = context.Pool(
            processes=min(num_workers, len(chunks)),
            initializer=exit_with_parent,
            initargs=(os.getpid(),),
        )
    with pool:
        for results in pool.imap(fn, chunks):
            yield from results
