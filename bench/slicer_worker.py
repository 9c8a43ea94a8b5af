"""Model-thread throughput under a simulated Slicer main loop, against the thread alone.

Slicer does not enable PythonQt's thread support, so its main thread holds the GIL whenever it is
in C++, the idle event loop included; a worker thread advances only while the main thread is in
Python or in a call that releases the GIL. This bench simulates that main loop: the GIL is held
by calling libc's ``usleep`` through ``ctypes.PyDLL`` (which, unlike ``CDLL``, keeps the GIL),
as Qt's event loop does. The worker runs ``--ops`` short GIL-releasing operations (a 1 ms sleep
each, as a small torch or NumPy call releases the GIL and then needs it back).

* old pattern: a 50 ms QTimer polls ``future.done()`` and returns to the event loop (the GIL is
  held for the whole tick);
* new pattern (the controller's): wait for the job in ``concurrent.futures.wait`` for 30 ms
  (:func:`volsam.mrml.worker.wait_for`, which releases the GIL), then process events (the GIL
  held for ``--events-ms``), and again until the job is done.

Printed: seconds for the worker alone and under each pattern, and throughput ratios (alone /
under the loop; 1.0 means no slowdown). Run: ``python bench/slicer_worker.py``.
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from volsam.mrml.worker import WAIT_SLICE_S, ModelWorker, wait_for  # noqa: E402

_LIBC = ctypes.PyDLL(None)  # calls through PyDLL keep the GIL, as Slicer's C++ main loop does


def hold_gil(seconds: float) -> None:
    _LIBC.usleep(int(seconds * 1e6))


def job(ops: int) -> int:
    for _ in range(ops):
        time.sleep(0.001)  # releases the GIL, then needs it back
    return ops


def alone(worker: ModelWorker, ops: int) -> float:
    start = time.perf_counter()
    worker.submit(job, ops).result()
    return time.perf_counter() - start


def old_pattern(worker: ModelWorker, ops: int, tick_s: float = 0.05) -> float:
    start = time.perf_counter()
    future = worker.submit(job, ops)
    while not future.done():
        hold_gil(tick_s)  # the event loop until the timer fires again
    return time.perf_counter() - start


def new_pattern(worker: ModelWorker, ops: int, events_s: float) -> float:
    start = time.perf_counter()
    future = worker.submit(job, ops)
    while not wait_for(future, WAIT_SLICE_S):
        hold_gil(events_s)  # slicer.app.processEvents()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=200)
    parser.add_argument("--events-ms", type=float, default=3.0, help="GIL-holding event processing per wait")
    args = parser.parse_args()
    worker = ModelWorker("bench-model")
    alone(worker, 10)  # warm the thread
    base = alone(worker, args.ops)
    old = old_pattern(worker, args.ops)
    new = new_pattern(worker, args.ops, args.events_ms / 1000)
    print(f"{args.ops} GIL-releasing operations of 1 ms on the model thread")
    print(f"  worker alone:                                   {base:6.2f} s")
    print(f"  old pattern (50 ms timer polls future.done()):  {old:6.2f} s   throughput ratio {base / old:.2f}")
    print(f"  new pattern (wait_for {WAIT_SLICE_S * 1000:.0f} ms, events {args.events_ms:g} ms):   "
          f"{new:6.2f} s   throughput ratio {base / new:.2f} (target >= 0.8)")
    worker.shutdown()


if __name__ == "__main__":
    main()
