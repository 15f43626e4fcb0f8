"""Running the API: one uvicorn process, or several workers fed connections round-robin.

uvicorn's own multi-worker mode shares ONE listening socket between its workers: whichever worker wakes
first accepts the pending connections in a burst, so a client pool that opens its keep-alive
connections together lands mostly on one worker (22 of 32 connections on one of two workers, measured
with ``benchmarks/slots.py``) and that worker's core saturates while the other idles. Per-worker
``SO_REUSEPORT`` sockets are no cure: the kernel picks a socket by a hash of the client's address, and
32 connections split 21/11 and 24/8 in two runs (p99 at 300 rps: 48 and 39 ms against 15 ms for 17/15).

So, like Node.js's cluster module, the parent process owns the listening socket, accepts, and hands
each connection to the next *ready* worker in turn, passing the file descriptor over a Unix socket
(``SCM_RIGHTS``); the worker adopts it into its event loop with uvicorn's HTTP protocol. Requests
never pass through the parent, only new connections (one ``accept`` and one ``sendmsg`` each). A
worker is ready once its app has started (lifespan done); a worker that dies is restarted and gets
connections again when ready, and one that fails during start-up stops the server
(``STARTUP_FAILURE``: a broken app would fail the same way again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import selectors
import signal
import socket
import threading
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.context import SpawnProcess
from types import FrameType
from typing import Any, Literal

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from coldstart.errors import ConfigError

log = logging.getLogger("uvicorn.error")

Balance = Literal["round_robin", "shared_socket"]
_READY = b"r"


class _AdoptingServer(uvicorn.Server):
    """A uvicorn server with no listening socket of its own: it serves the connections whose file
    descriptors arrive on ``channel`` (one per ``SOCK_SEQPACKET`` message)."""

    def __init__(self, config: uvicorn.Config, channel: socket.socket) -> None:
        super().__init__(config)
        self._channel = channel
        self._loop: asyncio.AbstractEventLoop | None = None

    def _protocol(self, _loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
        # what uvicorn's startup builds for its own listeners
        protocol: asyncio.Protocol = self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config,
            server_state=self.server_state,
            app_state=self.lifespan.state,
            _loop=_loop,
        )
        return protocol

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])
        if self.should_exit or not self.started:
            return
        self._loop = asyncio.get_running_loop()
        self._channel.setblocking(False)
        self._loop.add_reader(self._channel.fileno(), self._on_channel)
        self._channel.sendall(_READY)  # the parent starts handing us connections

    def _on_channel(self) -> None:
        loop = self._loop
        assert loop is not None
        while True:
            try:
                msg, fds, _flags, _addr = socket.recv_fds(self._channel, 16, 16)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.error("connection channel failed: %s", exc)
                msg, fds = b"", []
            if not msg and not fds:  # the parent is gone: stop like on SIGTERM
                loop.remove_reader(self._channel.fileno())
                self.should_exit = True
                return
            for fd in fds:
                sock = socket.socket(fileno=fd)
                sock.setblocking(False)
                loop.create_task(self._adopt(loop, sock))

    async def _adopt(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        try:
            await loop.connect_accepted_socket(self._protocol, sock)
        except OSError as exc:  # the client went away meanwhile
            log.debug("connection not adopted: %s", exc)
            sock.close()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._channel.fileno())
        await super().shutdown(sockets=sockets)


def _worker(config: uvicorn.Config, channel: socket.socket) -> None:  # runs in a spawned child
    config.configure_logging()
    with contextlib.suppress(KeyboardInterrupt):  # the parent is stopping us
        _AdoptingServer(config, channel).run()


@dataclass
class _Worker:
    proc: SpawnProcess
    channel: socket.socket  # the parent's end
    ready: bool = False
    gone: bool = False


class RoundRobinSupervisor:
    """Keeps ``config.workers`` uvicorn workers alive and hands them ``listener``'s connections in turn.

    Parameters
    ----------
    config
        uvicorn configuration of the workers (``workers`` = how many).
    listener
        A bound, listening TCP socket owned by this process.
    """

    def __init__(self, config: uvicorn.Config, listener: socket.socket) -> None:
        self.config = config
        self.listener = listener
        self.exit_code = 0
        self.handed_over = 0
        self._ctx = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._next = 0
        self._stop = threading.Event()

    # ------------------------------------------------------------------ workers
    def _start(self) -> _Worker:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        proc = self._ctx.Process(target=_worker, args=(self.config, theirs), daemon=False)
        proc.start()
        theirs.close()  # the child has its own copy; EOF on ours then means the child is gone
        mine.setblocking(False)
        return _Worker(proc, mine)

    def ready_workers(self) -> int:
        """Workers currently receiving connections."""
        with self._lock:
            return sum(w.ready for w in self._workers)

    # ------------------------------------------------------------------ dispatch (a thread)
    def _dispatch(self) -> None:
        sel = selectors.DefaultSelector()
        self.listener.setblocking(False)
        watched: dict[int, _Worker] = {}  # by id(): a new worker's channel may reuse an old fd number
        listening = False
        try:
            while not self._stop.is_set():
                with self._lock:
                    current = {id(w): w for w in self._workers if not w.gone}
                    any_ready = any(w.ready for w in self._workers)
                for key in [key for key in watched if key not in current]:
                    sel.unregister(watched.pop(key).channel)
                for key, w in current.items():
                    if key not in watched:
                        sel.register(w.channel, selectors.EVENT_READ, w)
                        watched[key] = w
                if any_ready != listening:  # accept only while a worker can take the connection
                    if any_ready:
                        sel.register(self.listener, selectors.EVENT_READ, None)
                    else:
                        sel.unregister(self.listener)
                    listening = any_ready
                for ready, _ in sel.select(timeout=0.2):
                    if ready.data is None:
                        self._accept_all()
                    else:
                        self._worker_message(ready.data)
        finally:
            sel.close()

    def _worker_message(self, w: _Worker) -> None:
        try:
            msg = w.channel.recv(16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            msg = b""
        with self._lock:
            if msg == _READY:
                w.ready = True
            elif not msg:  # EOF: the worker is gone (the supervisor restarts it)
                w.ready = False
                w.gone = True

    def _accept_all(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. EMFILE: leave the rest queued in the backlog
                log.error("accept failed: %s", exc)
                return
            try:
                self._hand_over(conn)
            finally:
                conn.close()  # the worker holds its own descriptor now

    def _hand_over(self, conn: socket.socket) -> None:
        with self._lock:
            n = len(self._workers)
            for _ in range(n):
                w = self._workers[self._next % n]
                self._next += 1
                if not w.ready:
                    continue
                try:
                    socket.send_fds(w.channel, [b"c"], [conn.fileno()])
                    self.handed_over += 1
                    return
                except (BlockingIOError, InterruptedError):
                    continue  # its channel is full: the next worker
                except OSError:
                    w.ready = False  # it died; the supervisor restarts it
        log.error("no worker could take a connection; closing it")

    # ------------------------------------------------------------------ supervision
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop.set()

    def run(self) -> int:
        """Serve until SIGINT/SIGTERM; returns the exit code (non-zero after a start-up failure)."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        dispatcher = threading.Thread(target=self._dispatch, name="dispatch", daemon=True)
        retired: list[_Worker] = []
        try:
            with self._lock:
                self._workers = [self._start() for _ in range(max(1, self.config.workers))]
            dispatcher.start()
            while not self._stop.is_set():
                with self._lock:
                    sentinels = [w.proc.sentinel for w in self._workers]
                wait(sentinels, timeout=0.5)
                for old in retired:  # closed one round later: the dispatcher has unregistered it
                    old.channel.close()
                retired = []
                with self._lock:
                    for i, w in enumerate(self._workers):
                        if w.proc.is_alive() or self._stop.is_set():
                            continue
                        w.ready = False
                        w.gone = True
                        if w.proc.exitcode == STARTUP_FAILURE:
                            log.error("worker %s failed to start; stopping", w.proc.pid)
                            self.exit_code = STARTUP_FAILURE
                            self._stop.set()
                            break
                        log.warning(
                            "worker %s died (exit code %s); restarting it", w.proc.pid, w.proc.exitcode
                        )
                        self._workers[i] = self._start()
                        retired.append(w)
        finally:
            self._stop.set()
            if dispatcher.is_alive():
                dispatcher.join(timeout=5)
            self.listener.close()  # new connections are refused from now on
            for w in self._workers:
                if w.proc.is_alive():
                    w.proc.terminate()  # uvicorn's graceful shutdown: in-flight requests finish
            for w in self._workers:
                w.proc.join(timeout=self.config.timeout_graceful_shutdown or 30)
                if w.proc.is_alive():
                    w.proc.kill()
                    w.proc.join()
                w.channel.close()
            for old in retired:
                old.channel.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.exit_code


def listen(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on ``(host, port)`` (``port=0``: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def serve(
    *,
    host: str,
    port: int,
    workers: int,
    balance: Balance = "round_robin",
    log_level: str = "info",
) -> int:
    """Run ``api.main:create_app`` until SIGINT/SIGTERM; returns the exit code.

    Parameters
    ----------
    host, port
        Bind address.
    workers
        Worker processes (``1``: serve in this process).
    balance
        With ``workers > 1``: ``"round_robin"`` (the parent accepts and hands connections to the
        workers in turn, see the module docstring) or ``"shared_socket"`` (uvicorn's own mode).
    log_level
        uvicorn log level.
    """
    common: dict[str, Any] = {
        "factory": True,
        "host": host,
        "port": port,
        "log_level": log_level,
        "access_log": False,
    }
    if workers <= 1 or balance == "shared_socket" or not hasattr(socket, "send_fds"):
        uvicorn.run("api.main:create_app", workers=workers, **common)
        return 0
    config = uvicorn.Config("api.main:create_app", workers=workers, **common)
    try:
        listener = listen(host, port, backlog=config.backlog)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from exc
    log.info(
        "coldstart API on http://%s:%d: %d workers, connections handed out round-robin",
        host,
        listener.getsockname()[1],
        workers,
    )
    return RoundRobinSupervisor(config, listener).run()
