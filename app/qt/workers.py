"""The viewer's one way to run work off the GUI thread.

A :class:`Worker` owns long-lived threads (one by default) and a queue of jobs. A job is a
callable ``job(control)`` that either returns its result or returns a generator (the way the
jobs of ``app.core`` are written): the worker drives the generator, each yielded value becomes a
``progress`` signal, and its return value the ``done`` signal. Requests of the same key coalesce,
latest wins: a new request replaces the one still waiting and asks the running one to stop, and
only the outcome of the newest request of a key reaches the GUI (a moving slider never piles up
work, and an old picture is never painted over a newer one).

Cancelling closes a generator at its next yield; a job that cannot stop early (a plain callable,
a pass inside a numba kernel) may poll ``control.cancelled()``. Every signal arrives on the GUI
thread, where the staleness check runs too, so no lock is needed to decide what is shown.
"""
from __future__ import annotations

import inspect
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from PyQt6.QtCore import QObject, pyqtSignal, pyqtSlot

_ANY = object()


class JobControl:
    """Handed to a running job: ``cancelled()`` to poll, ``report(value)`` to send a progress
    value from inside a plain callable (a generator just yields it)."""

    def __init__(self, report: Callable[[Any], None]):
        self._cancel = threading.Event()
        self._report = report

    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def report(self, value: Any) -> None:
        self._report(value)

    def _request_cancel(self) -> None:
        self._cancel.set()


class _Relay(QObject):
    """Carries outcomes from the worker threads. Parentless and held by the worker's threads, so
    it is alive whenever they emit: emitting a signal of the Worker itself could race with Qt
    deleting it on the GUI thread (its window closed)."""

    outcome = pyqtSignal(object)  # (job, kind, value)


@dataclass(eq=False)
class _Job:
    key: Any
    ticket: int
    fn: Callable[[JobControl], Any]
    stop: type[BaseException] | None
    progress_filter: Callable[[Any], Any] | None
    on_done: Callable[[Any], None] | None
    on_error: Callable[[BaseException], None] | None
    on_cancel: Callable[[], None] | None
    control: JobControl = field(init=False)


class Worker(QObject):
    """Runs jobs on ``threads`` long-lived threads; at most one job per key runs at a time.

    Signals (GUI thread, only for the newest request of a key):
        progress(key, ticket, value): a value the job yielded or reported.
        done(key, ticket, result): the job returned.
        failed(key, ticket, exception): the job raised.
        cancelled(key, ticket): the job stopped after :meth:`cancel`.
        busy(bool): some job is waiting or running / none is any more.
    """

    progress = pyqtSignal(object, int, object)
    done = pyqtSignal(object, int, object)
    failed = pyqtSignal(object, int, object)
    cancelled = pyqtSignal(object, int)
    busy = pyqtSignal(bool)

    def __init__(self, parent: QObject | None = None, *, name: str = "worker", threads: int = 1):
        super().__init__(parent)
        self._name = name
        self._n_threads = max(int(threads), 1)
        self._lock = threading.Condition()
        self._waiting: dict[Any, _Job] = {}   # insertion order: first come, first run (per key, the newest)
        self._running: dict[Any, _Job] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._tickets = itertools.count(1)
        # GUI thread only: the newest ticket of every key with work in flight, and how many
        # submitted jobs have not had their outcome delivered
        self._latest: dict[Any, int] = {}
        self._open = 0
        # a slot of this GUI-thread object: Qt queues what the threads emit to the GUI thread,
        # and drops it once this object is gone
        self._relay = _Relay()
        self._relay.outcome.connect(self._deliver)

    # ------------------------------------------------------------------ GUI-thread API
    def submit(self, key: Any, job: Callable[[JobControl], Any], *, stop: type[BaseException] | None = None,
               progress_filter: Callable[[Any], Any] | None = None,
               on_done: Callable[[Any], None] | None = None,
               on_error: Callable[[BaseException], None] | None = None,
               on_cancel: Callable[[], None] | None = None) -> int:
        """Queue ``job(control)`` under ``key`` (None: a key of its own, never coalesced) and
        return its ticket. ``stop``: an exception thrown into the generator on cancel instead of
        closing it, so that an iterative job can return its best result so far (a job that
        re-raises it is cancelled). ``progress_filter(value)`` runs on the worker thread and
        returns what to send (None: nothing), to thin out a fast stream of progress. The
        ``on_*`` callbacks run on the GUI thread after the matching signal."""
        if self._stopping:
            raise RuntimeError(f"the {self._name} worker is shut down")
        if key is None:
            key = object()
        job_record = _Job(key, next(self._tickets), job, stop, progress_filter, on_done, on_error, on_cancel)
        job_record.control = JobControl(lambda value, j=job_record: self._send_progress(j, value))
        was_idle = self._open == 0
        self._latest[key] = job_record.ticket
        with self._lock:
            replaced = self._waiting.pop(key, None)
            self._waiting[key] = job_record
            running = self._running.get(key)
            if running is not None:
                running.control._request_cancel()
            self._start_threads()
            self._lock.notify_all()
        if replaced is None:
            self._open += 1
        if was_idle:
            self.busy.emit(True)
        return job_record.ticket

    def cancel(self, key: Any = _ANY) -> None:
        """Stop the job of ``key`` (every job without one): a request that has not started is
        dropped and reports ``cancelled`` at once (unless one of its key is running: that one
        reports), the running one stops at its next yield and reports ``cancelled`` (or ``done``
        when it finished meanwhile)."""
        with self._lock:
            dropped = {k: job for k, job in self._waiting.items() if key is _ANY or k == key}
            for k in dropped:
                del self._waiting[k]
            running = {k: job for k, job in self._running.items() if key is _ANY or k == key}
            for job in running.values():
                job.control._request_cancel()
        for k, job in dropped.items():
            self._open -= 1
            if k in running:
                self._latest[k] = running[k].ticket  # its 'cancelled' is now the news to deliver
            else:
                # never started: cancelled now, so that whoever waits for its end hears of it
                self._latest.pop(k, None)
                self.cancelled.emit(k, job.ticket)
                if job.on_cancel is not None:
                    job.on_cancel()
        if dropped and self._open == 0:
            self.busy.emit(False)

    def busy_with(self, key: Any = _ANY) -> bool:
        """True while a job of ``key`` (any job) waits, runs or has its outcome on the way."""
        return self._open > 0 if key is _ANY else key in self._latest

    @property
    def is_running(self) -> bool:
        """A job waits, runs or has its outcome on the way."""
        return self._open > 0

    def cancel_requested(self, key: Any) -> bool:
        with self._lock:
            job = self._running.get(key)
            return job is not None and job.control.cancelled()

    def wait(self, timeout_s: float = 30.0, key: Any = _ANY) -> bool:
        """Process events until no job of ``key`` (no job) is in flight; True when idle (tests,
        scripts)."""
        from PyQt6.QtWidgets import QApplication

        end = time.monotonic() + timeout_s
        while self.busy_with(key) and time.monotonic() < end:
            QApplication.processEvents()
            time.sleep(0.005)
        QApplication.processEvents()
        return not self.busy_with(key)

    def shutdown(self, timeout_s: float = 5.0) -> bool:
        """Drop waiting jobs, stop the running ones and let the threads end (the window is
        closing); True when every thread ended within ``timeout_s``. A thread stuck in a long
        step is left to finish on its own: its outcome goes nowhere."""
        with self._lock:
            self._stopping = True
            self._waiting.clear()
            for job in self._running.values():
                job.control._request_cancel()
            self._lock.notify_all()
        end = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(end - time.monotonic(), 0.0))
        return not self.threads_alive

    @property
    def threads_alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    # ------------------------------------------------------------------ worker threads
    def _start_threads(self) -> None:
        """(under the lock) Threads are made on first use and then live as long as the worker."""
        self._threads = [t for t in self._threads if t.is_alive()]
        while len(self._threads) < self._n_threads:
            thread = threading.Thread(target=self._loop, name=f"{self._name}-{len(self._threads) + 1}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _next_job(self) -> _Job | None:
        with self._lock:
            while True:
                if self._stopping:
                    return None
                for key, job in self._waiting.items():
                    if key not in self._running:  # one job per key at a time: the newer waits its turn
                        del self._waiting[key]
                        self._running[key] = job
                        return job
                self._lock.wait()

    def _loop(self) -> None:
        while True:
            job = self._next_job()
            if job is None:
                return
            kind, value = self._drive(job)
            with self._lock:
                self._running.pop(job.key, None)
                self._lock.notify_all()  # a newer request of the same key may run now
            self._relay.outcome.emit((job, kind, value))
            # the GUI thread now holds the last references: what the job captured (callbacks,
            # Qt objects) is released there, never here
            job = kind = value = None

    @staticmethod
    def _drive(job: _Job) -> tuple[str, Any]:
        control = job.control
        try:
            result = job.fn(control)
            if not inspect.isgenerator(result):
                return "done", result
            stopping = False
            while True:
                if control.cancelled() and not stopping:
                    if job.stop is None:
                        result.close()
                        return "cancelled", None
                    stopping = True
                    value = result.throw(job.stop())
                else:
                    value = next(result)
                control.report(value)
        except StopIteration as stop:
            return "done", stop.value
        except BaseException as exc:  # noqa: BLE001 - every failure reaches the GUI as a signal
            return ("cancelled" if control.cancelled() else "failed"), exc

    def _send_progress(self, job: _Job, value: Any) -> None:
        if job.progress_filter is not None:
            value = job.progress_filter(value)
            if value is None:
                return
        self._relay.outcome.emit((job, "progress", value))

    # ------------------------------------------------------------------ back on the GUI thread
    @pyqtSlot(object)
    def _deliver(self, item) -> None:
        job, kind, value = item
        current = self._latest.get(job.key) == job.ticket
        if kind == "progress":
            # a plainly cancelled job shows nothing more; one told to stop early keeps reporting
            if current and not (job.control.cancelled() and job.stop is None):
                self.progress.emit(job.key, job.ticket, value)
            return
        self._open -= 1
        if current:
            del self._latest[job.key]
            if kind == "done":
                self.done.emit(job.key, job.ticket, value)
                if job.on_done is not None:
                    job.on_done(value)
            elif kind == "failed":
                self.failed.emit(job.key, job.ticket, value)
                if job.on_error is not None:
                    job.on_error(value)
            else:
                self.cancelled.emit(job.key, job.ticket)
                if job.on_cancel is not None:
                    job.on_cancel()
        if self._open == 0:
            self.busy.emit(False)
