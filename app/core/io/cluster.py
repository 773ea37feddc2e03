"""Independent per-item tasks on a dask.distributed cluster: what ``eval`` and ``compare`` do with
``--scheduler ADDRESS``.

>>> with connect("local:2") as session:                 # or "tcp://host:8786" (an existing scheduler)
...     for index, value, problem in session.run(task, [(path, name, settings), ...]):
...         ...                                         # in completion order; problem: one line or None

- ``tcp://HOST:PORT`` connects to a running scheduler (``dask scheduler`` + ``dask worker``);
  ``local:N`` starts a LocalCluster of N worker processes (one thread each) here and closes it
  at the end.
- Workers read their inputs from paths: every worker must see the files at the same absolute paths
  (a shared filesystem). Only paths and options go in, small dicts come back; no cube is pickled
  through the scheduler.
- A task that fails on the worker (an exception, the worker died) is reported as a one-line problem,
  never raised; leaving the ``with`` block early (Ctrl+C, an error) cancels the futures left and
  closes a LocalCluster.

dask is imported only inside :func:`connect` so that a plain ``eval`` never pays for it. Placed in
``io`` because both ``inference`` (eval) and ``evaluation`` (compare) use it.
"""
from __future__ import annotations

import contextlib
import re
import uuid
from dataclasses import dataclass
from typing import Callable, Iterator

from app.core.errors import HsiError

__all__ = ["Scheduler", "parse_scheduler", "connect", "Session", "compute_threads", "threads_as", "SINGLE_PROCESS",
           "CONNECT_TIMEOUT_S"]

CONNECT_TIMEOUT_S = 10.0
SINGLE_PROCESS = {"scheduler": None, "workers": 1}  # the documents' "execution" without --scheduler

_TCP = re.compile(r"^tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})$")
_LOCAL = re.compile(r"^local:(\d+)$")


@dataclass(frozen=True)
class Scheduler:
    """A parsed ``--scheduler`` value: ``address`` (tcp://host:port) or ``local_workers`` (N)."""

    text: str
    address: str | None = None
    local_workers: int | None = None


def parse_scheduler(text: str) -> Scheduler:
    """'tcp://HOST:PORT' or 'local:N' (N >= 1); ValueError saying what is expected otherwise."""
    value = str(text).strip()
    hit = _TCP.match(value)
    if hit:
        port = int(hit.group(2))
        if not 0 < port < 65536:
            raise ValueError(f"{value!r}: the port must be between 1 and 65535")
        return Scheduler(value, address=value)
    hit = _LOCAL.match(value)
    if hit:
        n = int(hit.group(1))
        if n < 1:
            raise ValueError(f"{value!r}: local:N needs at least one worker")
        return Scheduler(value, local_workers=n)
    raise ValueError(f"{value!r}: expected tcp://HOST:PORT (a running dask scheduler) or local:N (N worker "
                     f"processes on this machine)")


def compute_threads() -> int:
    """The intra-op thread count of this process (torch's; the CPU metrics split rows by it too)."""
    import torch

    return int(torch.get_num_threads())


@contextlib.contextmanager
def threads_as(n: int | None) -> Iterator[None]:
    """Run a task with the submitting process's thread count: parallel reductions split the work by
    the number of threads, so the same count gives the same numbers, bit for bit, as the
    single-process run (workers default to one thread; a worker runs one task at a time)."""
    if not n:
        yield
        return
    import torch

    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        if n != before:
            torch.set_num_threads(before)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


class Session:
    """A connected client: :meth:`run` submits tasks and yields their results as they complete."""

    def __init__(self, client, scheduler: Scheduler):
        self.client = client
        self.scheduler = scheduler
        self._futures: list = []

    @property
    def workers(self) -> int:
        return len(self.client.nthreads())

    @property
    def execution(self) -> dict:
        """What the documents record: {"scheduler": the --scheduler text, "workers": N}."""
        return {"scheduler": self.scheduler.text, "workers": self.workers}

    def run(self, fn: Callable, tasks: list[tuple], *, name: str = "hsi",
            should_cancel: Callable[[], bool] | None = None) -> Iterator[tuple[int, object, str | None]]:
        """Submit ``fn(*args)`` for every tuple of ``tasks`` (plain values: paths, names, options);
        yield (index in ``tasks``, the value or None, None or the one-line problem) as they complete.
        ``should_cancel()`` turning true (polled after each result) cancels the rest (``Cancelled``)."""
        from distributed import as_completed

        from app.core.errors import Cancelled

        token = uuid.uuid4().hex[:8]
        futures = [self.client.submit(fn, *args, key=f"{name}-{k:05d}-{token}", pure=False)
                   for k, args in enumerate(tasks)]
        self._futures.extend(futures)
        index = {f.key: k for k, f in enumerate(futures)}
        for fut in as_completed(futures):
            k = index[fut.key]
            if fut.status == "finished":
                try:
                    value, problem = fut.result(), None
                except Exception as exc:  # noqa: BLE001 - e.g. the result cannot be unpickled here
                    value, problem = None, _one_line(exc)
            else:
                try:
                    exc = fut.exception()
                except BaseException as err:  # noqa: BLE001 - a cancelled future raises CancelledError
                    exc = err
                problem = _one_line(exc) if exc is not None else f"task {fut.status}"
                value = None
            fut.release()
            yield k, value, problem
            if should_cancel is not None and should_cancel():
                raise Cancelled("cancelled by the user")

    def cancel(self) -> None:
        pending = [f for f in self._futures if not f.done()]
        if pending:
            with contextlib.suppress(Exception):
                self.client.cancel(pending, force=True)
        self._futures.clear()


@contextlib.contextmanager
def connect(scheduler: str | Scheduler, *, timeout: float | None = None) -> Iterator[Session]:
    """A :class:`Session` on ``scheduler`` (a ``--scheduler`` text or a parsed one). An unreachable
    scheduler, or one without workers, is an HsiError within ``timeout`` seconds (default
    ``CONNECT_TIMEOUT_S``). On leaving, the
    futures left are cancelled, the client closed and a LocalCluster shut down."""
    spec = parse_scheduler(scheduler) if isinstance(scheduler, str) else scheduler
    timeout = CONNECT_TIMEOUT_S if timeout is None else timeout
    import logging

    from distributed import Client, LocalCluster

    cluster = client = session = None
    try:
        if spec.local_workers is not None:
            try:
                cluster = LocalCluster(n_workers=spec.local_workers, processes=True, threads_per_worker=1,
                                       dashboard_address=":0", silence_logs=logging.ERROR)
                client = Client(cluster, timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - no ports, no processes: one line
                raise HsiError(f"cannot start a local dask cluster of {spec.local_workers} workers "
                               f"({_one_line(exc)})") from None
        else:
            try:
                client = Client(spec.address, timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - OSError/TimeoutError: nobody listening there
                raise HsiError(f"cannot reach the dask scheduler at {spec.address} "
                               f"({_one_line(exc)})") from None
            try:
                client.wait_for_workers(1, timeout=timeout)
            except Exception:  # noqa: BLE001 - dask's TimeoutError
                raise HsiError(f"the dask scheduler at {spec.address} has no workers (none joined within "
                               f"{timeout:g} s; start some with `dask worker {spec.address}`)") from None
        session = Session(client, spec)
        yield session
    finally:
        if session is not None:
            session.cancel()
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close()
