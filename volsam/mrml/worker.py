"""The one thread that runs all model work, how the main thread waits for it, and when to show
progress. Qt-free: the Slicer modules and the browser app use it through the controller.

All model work (loading weights, embedding a volume, every prompt) runs on one persistent
thread: cuDNN and similar caches are per thread, so a fresh thread per click would pay the
warm-up again (about 0.12 s warm against 1.2 s cold per click on an RTX 4090). The thread is a
daemon: quitting Slicer or the app never waits for a running job.

**Waiting releases the GIL.** Slicer does not enable PythonQt's thread support, so its main
thread holds the GIL whenever it is in C++, the idle event loop included: a worker thread runs
only while the main thread is in Python or in a call that releases the GIL. Polling
``future.done()`` from a 50 ms timer therefore lets the worker advance about once per tick
(measured 47x slower in ``bench/slicer_worker.py``). :func:`wait_for` waits inside
``concurrent.futures.wait``, which releases the GIL, so the worker runs at full speed while the
main thread waits; between two waits the main thread processes its events.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as _wait_futures
from dataclasses import dataclass, field

#: A wait cursor shows at once; a progress dialog only for work that takes longer than this.
PROGRESS_DIALOG_DELAY_S = 2.0
#: How long the main thread waits in one GIL-releasing call before it processes its events.
WAIT_SLICE_S = 0.03


def wait_for(future: Future | None, timeout: float) -> bool:
    """Wait up to ``timeout`` s for ``future`` in a call that releases the GIL; True if done."""
    if future is None:
        return False
    if timeout > 0:
        _wait_futures([future], timeout=timeout)
    return future.done()


class ModelWorker:
    """A single persistent daemon thread; jobs run one after another in submission order."""

    def __init__(self, name: str = "VolumetricSAM-model"):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._stopped = False
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def submit(self, function: Callable, *args, **kwargs) -> Future:
        if self._stopped:
            raise RuntimeError("the model thread was stopped")
        future: Future = Future()
        self._jobs.put((future, function, args, kwargs))
        return future

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, function, args, kwargs = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = function(*args, **kwargs)
            except BaseException as error:  # handed to the main thread, which reports it
                future.set_exception(error)
            else:
                future.set_result(result)

    def shutdown(self) -> None:
        """Stop accepting jobs; queued ones are cancelled, the running one finishes on its own
        (model code cannot be interrupted) and nobody waits for it."""
        self._stopped = True
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[0].cancel()
        self._jobs.put(None)


@dataclass
class JobProgress:
    """Progress of a running job, written by the worker and read by the main thread.

    ``cancel`` is set by the user (Cancel button); long jobs check it between steps.
    """

    message: str = ""
    done: int = 0
    total: int = 0
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def __post_init__(self):
        self._lock = threading.Lock()

    def update(self, done: int, total: int, message: str | None = None) -> None:
        with self._lock:
            self.done, self.total = int(done), int(total)
            if message is not None:
                self.message = message

    def snapshot(self) -> tuple[str, int, int]:
        with self._lock:
            return self.message, self.done, self.total


class DelayedProgress:
    """Decides when a progress dialog appears: only once a job has run ``delay_s``."""

    def __init__(self, delay_s: float = PROGRESS_DIALOG_DELAY_S, clock: Callable[[], float] = time.monotonic):
        self.delay_s = delay_s
        self._clock = clock
        self._started: float | None = None

    def start(self) -> None:
        self._started = self._clock()

    def stop(self) -> None:
        self._started = None

    @property
    def running(self) -> bool:
        return self._started is not None

    def dialog_due(self) -> bool:
        return self._started is not None and self._clock() - self._started >= self.delay_s
