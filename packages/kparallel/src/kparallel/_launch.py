"""A one-machine launcher with ``torchrun``'s environment, for tests and notebooks.

``launch(fn, nprocs)`` starts ``nprocs`` fresh Python interpreters (as ``torchrun`` does),
gives each the variables ``torchrun`` would set (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``LOCAL_WORLD_SIZE``, ``MASTER_ADDR=127.0.0.1``, ``MASTER_PORT``), runs ``fn(*args)`` in
each and returns their return values in rank order. So a training function written for
``torchrun`` (calling ``init_distributed()``) runs here unchanged. Like ``torchrun``'s
agent, the parent serves the rendezvous store and the workers connect to it as clients
(``TORCHELASTIC_USE_AGENT_STORE=True``): the port is bound before any worker starts, so
no other program can take it in between (the race of picking a free port for rank 0 to
bind later).

Fresh interpreters rather than ``multiprocessing`` spawn: spawn re-runs the parent's main
script in every child, which breaks scripts without an ``if __name__ == "__main__"``
guard, notebooks' exec'd cells and doc runners; a fresh ``python -c`` has no such step.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ._split import as_int

__all__ = ["free_port", "launch"]

logger = logging.getLogger("kparallel")

_BOOTSTRAP = "import sys; from kparallel._launch import _child_main; _child_main(sys.argv[1])"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (the OS picks it).

    Another program may take it before you bind it; ``launch`` does not use it (it binds
    its rendezvous port itself before starting the workers).

    Examples:
        >>> 1024 <= free_port() <= 65535
        True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _child_main(folder: str) -> None:
    """Entry point of a launched worker: run the pickled call, store the result, exit."""
    results = Path(folder)
    rank = int(os.environ["RANK"])
    code = 0
    try:
        with open(results / "payload.pkl", "rb") as f:
            sys_path, call = pickle.load(f)
        # The parent's import path first, so fn's module imports as it did there.
        sys.path[:0] = [p for p in sys_path if p not in sys.path]
        fn, args = pickle.loads(call)
        value = fn(*args)
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            # Tear the group down only once every rank is done with it: a rank that exits
            # while a peer still has traffic in flight can make gloo abort that peer.
            dist.barrier()
        tmp = results / f".rank{rank}.tmp"
        torch.save(value, tmp)
        os.replace(tmp, results / f"rank{rank}.pt")
    except BaseException:
        (results / f"rank{rank}.error").write_text(traceback.format_exc())
        code = 1
    finally:
        import torch.distributed as dist

        # A function that forgot shutdown_distributed() must not hang the others' exit.
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    _exit_without_finalizing(code)


def _exit_without_finalizing(code: int) -> None:
    """End the worker as ``multiprocessing``'s fork workers end: no interpreter shutdown.

    A ``DistributedDataParallel`` model keeps its gloo group, and so the group's worker
    threads, alive after ``destroy_process_group``. If such a thread frees its last
    collective's tensors while the interpreter is shutting down, it cannot take the GIL,
    is unwound, and the C++ runtime aborts the process ("terminate called without an
    active exception", exit -6): a worker that finished its work and saved its result
    would be reported as failed (seen in about 3 % of two-rank runs on 2 cores). So the
    exit handlers run and the output is flushed here, and the process ends without the
    shutdown that races those threads.
    """
    try:
        atexit._run_exitfuncs()  # what a normal exit runs first (logging's flush included)
    finally:
        for stream in (sys.stdout, sys.stderr):
            # A stream the function closed or replaced has nothing left to flush.
            with contextlib.suppress(AttributeError, OSError, ValueError):
                stream.flush()
        os._exit(code)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for p in processes:
        if p.poll() is None:
            p.terminate()
    for p in processes:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


_OMP_NOTICE = (
    "\n*****************************************\n"
    "Setting OMP_NUM_THREADS environment variable for each process to be "
    "1 in default, to avoid your system being overloaded, "
    "please further tune the variable for optimal performance in "
    "your application as needed. \n"
    "*****************************************"
)


def _agent_store(host: str, port: int) -> Any:
    """The rendezvous store, served by this (parent) process, as torchrun's agent does.

    The children connect to it as clients (``TORCHELASTIC_USE_AGENT_STORE=True``), so no
    child ever binds a port: the port is held from before the first child starts until
    the last one ends, and nothing else can take it in between.
    """
    from datetime import timedelta

    import torch.distributed as dist

    try:
        return dist.TCPStore(  # type: ignore[attr-defined]
            host,
            port,
            world_size=None,
            is_master=True,
            timeout=timedelta(seconds=60),
            wait_for_workers=False,
        )
    except (RuntimeError, OSError) as exc:
        raise RuntimeError(
            f"launch: cannot serve the rendezvous on {host}:{port} ({exc}); pass another "
            "master_port, or None to let the system pick a free one"
        ) from None


def launch(
    fn: Callable[..., Any],
    nprocs: int = 2,
    *,
    args: Sequence[Any] = (),
    master_addr: str = "127.0.0.1",
    master_port: int | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> list[Any]:
    """Run ``fn(*args)`` in ``nprocs`` processes set up like ``torchrun`` on one node.

    As ``torchrun`` does, this process serves the rendezvous store (a ``TCPStore`` bound
    before any worker starts, on ``master_port`` or on a port the system picks) and the
    workers join it as clients, so there is no window in which another program can take
    the port. Also as ``torchrun``: when ``OMP_NUM_THREADS`` is unset (here and in
    ``env``) and ``nprocs`` > 1, the workers get ``OMP_NUM_THREADS=1`` and torchrun's
    notice is issued as a warning. Each worker ends once its result is saved: exit
    handlers run and output is flushed, then the process exits without interpreter
    shutdown (as ``multiprocessing``'s fork workers do), which would race the gloo threads
    a DDP model keeps alive and can abort a worker that finished its work.

    Args:
        fn: A function importable by module name (defined in a module, not in ``__main__``
            or a notebook cell); it typically calls ``init_distributed()``.
        nprocs: Number of processes (ranks), >= 1 (numpy integers accepted).
        args: Positional arguments for ``fn`` (picklable).
        master_addr: Rendezvous address (loopback by default).
        master_port: Rendezvous port; one the system picks when None.
        env: Extra environment variables for the workers.
        timeout: Seconds before the workers are stopped and ``TimeoutError`` raised.

    Returns:
        The return values of ``fn``, index = rank (saved with ``torch.save``, so tensors
        and state dicts come back intact).

    Raises:
        ValueError: ``nprocs`` < 1, or ``fn`` is defined in ``__main__``.
        TypeError: ``fn`` or ``args`` cannot be pickled, or ``nprocs`` is not an int.
        RuntimeError: a worker failed (the message holds its traceback; the others are
            stopped), or the rendezvous cannot be served on ``master_port``.
        TimeoutError: the workers ran past ``timeout``.

    Examples:
        >>> import operator
        >>> launch(operator.add, 2, args=(1, 2), env={"OMP_NUM_THREADS": "1"})
        [3, 3]
    """
    nprocs = as_int("nprocs", nprocs, minimum=1)
    if master_port is not None:
        master_port = as_int("master_port", master_port, minimum=0)
    if getattr(fn, "__module__", None) == "__main__":
        raise ValueError(
            f"launch(fn={getattr(fn, '__name__', fn)!r}): fn is defined in __main__, which the "
            "worker processes cannot import; move it into a module and import it"
        )
    try:
        call = pickle.dumps((fn, tuple(args)))
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise TypeError(f"launch: fn and args must be picklable: {exc}") from None
    extra = dict(env or {})
    if "OMP_NUM_THREADS" not in os.environ and "OMP_NUM_THREADS" not in extra and nprocs > 1:
        warnings.warn(_OMP_NOTICE, UserWarning, stacklevel=2)
        extra["OMP_NUM_THREADS"] = "1"
    store = _agent_store(master_addr, 0 if master_port is None else master_port)
    try:
        port = int(store.port)
        logger.info(
            "launch: starting %d processes, rendezvous %s:%d served by this process",
            nprocs,
            master_addr,
            port,
        )
        return _run(call, nprocs, master_addr, port, extra, timeout)
    finally:
        del store  # closes the rendezvous server


def _run(
    call: bytes,
    nprocs: int,
    master_addr: str,
    port: int,
    env: Mapping[str, str],
    timeout: float | None,
) -> list[Any]:
    results = Path(tempfile.mkdtemp(prefix="kparallel-launch-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with open(results / "payload.pkl", "wb") as f:
            pickle.dump((list(sys.path), call), f)
        base = dict(os.environ)
        base.update(env)
        base.update(
            MASTER_ADDR=master_addr,
            MASTER_PORT=str(port),
            WORLD_SIZE=str(nprocs),
            LOCAL_WORLD_SIZE=str(nprocs),
            GROUP_RANK="0",
            TORCHELASTIC_USE_AGENT_STORE="True",
        )
        for rank in range(nprocs):
            child = dict(base, RANK=str(rank), LOCAL_RANK=str(rank))
            processes.append(
                subprocess.Popen([sys.executable, "-c", _BOOTSTRAP, str(results)], env=child)
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            codes = [p.poll() for p in processes]
            failed = [r for r, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                rank = failed[0]
                _stop(processes)
                error = results / f"rank{rank}.error"
                detail = error.read_text() if error.exists() else f"exit code {codes[rank]}"
                raise RuntimeError(f"launch: rank {rank} failed:\n{detail}")
            if all(c == 0 for c in codes):
                break
            if deadline is not None and time.monotonic() > deadline:
                _stop(processes)
                raise TimeoutError(f"launch: workers still running after {timeout} s")
            time.sleep(0.05)
        return [torch.load(results / f"rank{r}.pt", weights_only=False) for r in range(nprocs)]
    finally:
        _stop(processes)
        shutil.rmtree(results, ignore_errors=True)
