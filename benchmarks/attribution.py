"""Split a Dagster run's wall time into the work and what Dagster adds around it.

"Work" is the time spent inside the asset and check functions (the bodies
this project wrote) and inside the IO manager's `handle_output`/`load_input`
(reading and writing the lake), measured in the run itself; log calls made
from inside a body (each one an event written to the instance) are taken out
of the work and counted as Dagster's. Everything else in the run's wall time
is orchestration: building the plan, resource setup, events and metadata
written to the instance, step bookkeeping.

`attribute()` patches the two places Dagster calls user code
(`compute_generator.invoke_compute_fn`, which runs every asset and check body
or returns its generator) and the project's IO manager, for the duration of a
`with` block. Only benchmarks use it.

It also records, per step, the peak resident memory of the process while the
step's own code ran (sampled every 20 ms from /proc on Linux): a range run's
peak RSS says how much, this says where.
"""

from __future__ import annotations

import inspect
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class WorkClock:
    """Seconds of work per step (op name) and in all."""

    by_step: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    peak_mb_by_step: dict[str, float] = field(default_factory=dict)
    logging_s: float = 0.0
    _depth: int = 0
    _active: str | None = None

    def sample_memory(self) -> None:
        step, rss = self._active, _rss_mb()
        if step is not None and rss is not None:
            self.peak_mb_by_step[step] = max(self.peak_mb_by_step.get(step, 0.0), rss)

    @property
    def work_s(self) -> float:
        return sum(self.by_step.values()) - self.logging_s

    @contextmanager
    def timing(self, step: str) -> Iterator[None]:
        # Nested calls (an IO manager read inside a body) are counted once, by the outermost.
        self._depth += 1
        if self._depth == 1:
            self._active = step
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self.by_step[step] += time.perf_counter() - t0
                self.sample_memory()  # a step shorter than the sampling period gets one reading
                self._active = None

    def timed_generator(self, gen: Iterator[Any], step: str) -> Iterator[Any]:
        # Time only the body's own progress: Dagster handles each yielded event between next() calls.
        while True:
            with self.timing(step):
                try:
                    item = next(gen)
                except StopIteration as stop:
                    return stop.value
            yield item


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux: no per-step memory
        return None


def _sample_until(clock: WorkClock, stop: threading.Event) -> None:
    while not stop.wait(0.02):
        clock.sample_memory()


def _step_name(context: Any) -> str:
    try:
        return context.op_execution_context.op_def.name
    except Exception:  # direct invocation contexts and the like: attribute to one bucket
        return "?"


@contextmanager
def attribute() -> Iterator[WorkClock]:
    """Measure the work of every Dagster step run in this process inside the block."""
    from dagster._core import log_manager
    from dagster._core.execution.plan import compute_generator

    from resources.lake import LakeIOManager

    clock = WorkClock()
    original_invoke = compute_generator.invoke_compute_fn
    original_handle, original_load = LakeIOManager.handle_output, LakeIOManager.load_input
    original_log = log_manager.DagsterLogManager._log  # noqa: SLF001 (the one funnel of every context.log call)

    def invoke(fn: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
        step = _step_name(context)
        with clock.timing(step):
            result = original_invoke(fn, context, *args, **kwargs)
        if inspect.isgenerator(result):
            return clock.timed_generator(result, step)
        return result

    def handle_output(self: Any, context: Any, obj: Any) -> None:
        with clock.timing(context.step_key or "?"):
            original_handle(self, context, obj)

    def load_input(self: Any, context: Any) -> Any:
        with clock.timing(context.step_context.step.key if context.step_context else "?"):
            return original_load(self, context)

    def log(self: Any, *args: Any, **kwargs: Any) -> Any:
        if clock._depth == 0:  # noqa: SLF001 (outside a body the time is Dagster's already)
            return original_log(self, *args, **kwargs)
        t0 = time.perf_counter()
        try:
            return original_log(self, *args, **kwargs)
        finally:
            clock.logging_s += time.perf_counter() - t0

    compute_generator.invoke_compute_fn = invoke
    LakeIOManager.handle_output, LakeIOManager.load_input = handle_output, load_input
    # The log manager has no public hook for timing its calls; patched only inside this block.
    log_manager.DagsterLogManager._log = log  # noqa: SLF001
    stop = threading.Event()
    sampler = threading.Thread(target=_sample_until, args=(clock, stop), daemon=True)
    sampler.start()
    try:
        yield clock
    finally:
        stop.set()
        sampler.join()
        compute_generator.invoke_compute_fn = original_invoke
        LakeIOManager.handle_output, LakeIOManager.load_input = original_handle, original_load
        log_manager.DagsterLogManager._log = original_log  # noqa: SLF001 (restore the original)
