"""Run Python programs as new processes without paying for the third-party imports each time.

``python program.py`` spends about 0.4 s of CPU importing aiohttp, attrs, cattrs and the like
before it runs a line of the program. A :class:`ProgramRunner` starts one helper process per
test session (the *fork server*) that imports those libraries once and then forks a child per
program. The child is a real process of its own: its own pid, exit status, signals, file
descriptors 0-2 (the pipes the test gives it), environment, working directory, ``sys.argv``,
``sys.path[0]`` and a new ``__main__`` module, as ``python -c CODE`` or ``python PATH ARGS``
sets them up. It exits as the interpreter would: 0 at the end, the ``SystemExit`` code, or 1
after printing the traceback of an uncaught exception, once non-daemon threads and ``atexit``
handlers have run and the standard streams are flushed.

What differs from a new interpreter is only what was imported before the fork, and the fork
server imports no module of this project: ``polyai_async`` is imported afresh by every program,
with that program's environment (the fork server checks this before it serves). Options read at
interpreter start (``PYTHON*`` variables, ``-X``, the hash seed) are the fork server's, which
starts with the environment of the tests minus ``POLYAI_*`` settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Third-party libraries (and the slow standard modules) the documented programs import; never
# a module of polyai_async, so each program imports the library itself.
PRELOAD = (
    "asyncio",
    "ssl",
    "aiohttp",
    "aiohttp.web",
    "attrs",
    "cattrs",
    "orjson",
    "yarl",
    "multidict",
    "tenacity",
    "psutil",
    "hdrh.histogram",
    "opentelemetry.sdk.metrics",
    "opentelemetry.sdk.metrics.export",
    "opentelemetry.sdk.trace",
    "opentelemetry.sdk.trace.export",
)
_MAX_MESSAGE = 1 << 20
_STDIO = 3  # the fds a request carries: stdout, stderr and the request's status socket


class Program:
    """A program the fork server started: its pid, exit status and signals."""

    def __init__(
        self, pid: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._reader = reader
        self._writer = writer

    async def wait(self) -> int:
        """Wait for the program to exit; its status as ``subprocess`` gives it (-N: signal N)."""
        if self.returncode is None:
            line = await self._reader.readline()
            assert line, "the fork server stopped before the program"
            self.returncode = int(line)
            self._writer.close()
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Signal the program unless it has exited (the fork server, which reaps it, sends the
        signal, so it never reaches a reused pid)."""
        if self.returncode is None:
            self._writer.write(f"{sig}\n".encode())

    def terminate(self) -> None:
        """Send SIGTERM."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """Send SIGKILL."""
        self.send_signal(signal.SIGKILL)


class ProgramRunner:
    """The parent's side of the fork server: start programs, each in a new child process."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._server = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "tests.programs", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            cwd=ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        theirs.close()
        ready = self._control.recv(_MAX_MESSAGE)
        if ready != b"ready":
            assert self._server.stderr is not None
            self._server.wait(30)
            raise RuntimeError(f"the fork server did not start: {self._server.stderr.read()!r}")

    async def start(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path = ROOT,
        stdout: int,
        stderr: int,
    ) -> Program:
        """Start ``python *args`` (``-c CODE`` or ``PATH ARG...``) writing to these fds."""
        ours, theirs = socket.socketpair()
        request = {"args": list(args), "env": dict(env), "cwd": str(cwd)}
        try:
            socket.send_fds(
                self._control,
                [json.dumps(request).encode()],
                [stdout, stderr, theirs.fileno()],
            )
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        line = await reader.readline()
        assert line, "the fork server did not start the program"
        return Program(int(line), reader, writer)

    def close(self) -> None:
        """Stop the fork server (it kills any program still running)."""
        self._control.close()
        try:
            self._server.wait(10)
        except subprocess.TimeoutExpired:
            self._server.kill()
            self._server.wait()
        assert self._server.stderr is not None
        self._server.stderr.close()


async def read_pipe(fd: int) -> tuple[asyncio.StreamReader, asyncio.BaseTransport]:
    """A StreamReader on the read end of a pipe (closed with the transport)."""
    reader = asyncio.StreamReader()
    transport, _ = await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    return reader, transport


async def run_python(
    runner: ProgramRunner,
    *args: str,
    env: Mapping[str, str],
    cwd: Path = ROOT,
    timeout: float,
    stderr: bool = True,
) -> tuple[int, str, str]:
    """Run ``python *args`` to completion through the fork server, as
    ``asyncio.create_subprocess_exec`` with pipes would: its exit status, stdout and stderr
    (with ``stderr=False`` both go to the one pipe, the stdout returned, as with
    ``stderr=STDOUT``). A program still running after ``timeout`` is killed:
    asyncio.TimeoutError."""
    pipes = [os.pipe() for _ in range(2 if stderr else 1)]
    writes = [w for _, w in pipes]
    try:
        proc = await runner.start(args, env=env, cwd=cwd, stdout=writes[0], stderr=writes[-1])
    finally:
        for w in writes:
            os.close(w)
    opened = [await read_pipe(r) for r, _ in pipes]
    readers = [reader for reader, _ in opened]
    transports = [transport for _, transport in opened]

    async def communicate() -> list[bytes]:
        outputs = await asyncio.gather(*(reader.read() for reader in readers))
        await proc.wait()
        return outputs

    try:
        outputs = await asyncio.wait_for(communicate(), timeout)
    except asyncio.TimeoutError:  # the builtin one only from Python 3.11
        proc.kill()
        await proc.wait()
        raise
    finally:
        for transport in transports:
            transport.close()
    assert proc.returncode is not None
    out = outputs[0].decode()
    return proc.returncode, out, outputs[-1].decode() if stderr else ""


# -- the fork server --------------------------------------------------------------------------


class _ForkServer:
    """Fork a child per request on ``control``; report each one's pid, then its exit status."""

    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.wake, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.selector = selectors.DefaultSelector()
        self.selector.register(control, selectors.EVENT_READ)
        self.selector.register(self.wake, selectors.EVENT_READ)
        self.children: dict[int, socket.socket] = {}

    def serve(self) -> None:
        """Serve until the tests close the control socket, then kill what still runs."""
        self.control.send(b"ready")
        while True:
            for key, _ in self.selector.select():
                if key.fileobj is self.control:
                    if not self.fork():
                        for pid in self.children:
                            os.kill(pid, signal.SIGKILL)
                        for pid in self.children:
                            os.waitpid(pid, 0)
                        return
                elif key.fileobj == self.wake:
                    os.read(self.wake, 4096)
                    self.reap()
                else:
                    assert isinstance(key.fileobj, socket.socket)
                    self.signal(key.fileobj, key.data)

    def fork(self) -> bool:
        """Start the program of the next request; False once the tests are gone."""
        message, fds, _, _ = socket.recv_fds(self.control, _MAX_MESSAGE, _STDIO)
        if not message:
            return False
        stdout, stderr, status_fd = fds
        status = socket.socket(fileno=status_fd)
        pid = os.fork()
        if pid == 0:
            _child(json.loads(message), stdout, stderr)
        os.close(stdout)
        os.close(stderr)
        self.children[pid] = status
        status.sendall(f"{pid}\n".encode())
        self.selector.register(status, selectors.EVENT_READ, pid)
        return True

    def reap(self) -> None:
        """Send each child that exited its status, as ``subprocess`` gives it."""
        while self.children:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
            status = self.children.pop(pid)
            with contextlib.suppress(KeyError):  # unless its parent gave up on it
                self.selector.unregister(status)
            with contextlib.suppress(OSError):
                status.sendall(f"{os.waitstatus_to_exitcode(wait_status)}\n".encode())
            status.close()

    def signal(self, status: socket.socket, pid: int) -> None:
        """Signal a child not yet reaped as its parent asks; kill it if its parent gave up."""
        data = status.recv(64)
        for sig in data.split() if data else [b"%d" % signal.SIGKILL]:
            os.kill(pid, int(sig))
        if not data:
            self.selector.unregister(status)


def _child(request: dict[str, Any], stdout: int, stderr: int) -> None:
    """In the forked child: become ``python *args`` and exit as the interpreter would."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.dup2(stdout, 1)
        os.dup2(stderr, 2)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        code = _run_main(request["args"])
        code = _finalize(code)
    finally:
        os._exit(code)


def _run_main(args: list[str]) -> int:
    """Run ``-c CODE`` or ``PATH ARG...`` as ``__main__``; the exit status Python would give."""
    import builtins
    import types

    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    if args[0] == "-c":
        source, filename = args[1], "<string>"
        sys.argv = ["-c", *args[2:]]
        sys.path[0] = ""
    else:
        path = Path(args[0])
        source, filename = path.read_text(), args[0]
        sys.argv = list(args)
        sys.path[0] = str(path.resolve().parent)
        main.__dict__.update(__file__=filename, __cached__=None)
    sys.modules["__main__"] = main
    try:
        exec(compile(source, filename, "exec"), main.__dict__)  # noqa: S102 - the program to run
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print(exc.code, file=sys.stderr)
        return 1
    except BaseException as exc:  # as Python does: the traceback on stderr, status 1
        frames = exc.__traceback__
        exc = exc.with_traceback(frames.tb_next if frames else None)  # from the program's frame
        sys.excepthook(type(exc), exc, exc.__traceback__)
        return 1
    return 0


def _finalize(code: int) -> int:
    """What the interpreter does at exit: join threads, run atexit handlers, flush."""
    import atexit
    import threading

    getattr(threading, "_shutdown")()  # noqa: B009 - private: what Py_Finalize calls
    getattr(atexit, "_run_exitfuncs")()  # noqa: B009
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = 120  # as Python's exit when flushing fails
    return code


def main(argv: Sequence[str]) -> None:
    """The fork server's entry point: preload, check nothing of ours came along, serve."""
    import importlib

    control = socket.socket(fileno=int(argv[0]))
    for name in PRELOAD:
        importlib.import_module(name)
    ours = sorted(name for name in sys.modules if name.split(".")[0] == "polyai_async")
    if ours:
        raise RuntimeError(f"preloading imported the library itself: {ours}")
    _ForkServer(control).serve()


if __name__ == "__main__":
    main(sys.argv[1:])
