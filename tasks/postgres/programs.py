"""The client programs: pg_dump writing an archive to a pipe, pg_restore reading one from a pipe,
and the tail of their stderr for the error message."""

from __future__ import annotations

import subprocess
import threading
import time
from collections import deque
from typing import Iterator

from maint.config import DatabaseConfig
from maint.errors import DumpError
from maint.redaction import redact
from maint.tasks.postgres.connection import client_environment, describe


def client_version(program: str) -> str:
    try:
        out = subprocess.run([program, "--version"], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise DumpError(f"{program} not found on PATH: install the PostgreSQL client programs") from None
    return out.stdout.strip()


class StderrTail:
    """Drains a child's stderr in a thread (a chatty child never blocks on a full pipe) and keeps
    only its last lines, so memory stays flat however long the child runs."""

    def __init__(self, stream, lines: int):
        self._lines: deque[str] = deque(maxlen=lines)
        self._thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self._thread.start()

    def _drain(self, stream) -> None:
        for line in iter(stream.readline, b""):
            self._lines.append(line.decode(errors="replace").rstrip())

    def text(self) -> str:
        """The kept lines, once the child has exited."""
        self._thread.join(timeout=5)
        return "; ".join(line for line in self._lines if line)


class DumpProcess:
    """pg_dump writing a custom-format archive to a pipe that the caller reads in chunks."""

    def __init__(self, db: DatabaseConfig, *, snapshot_id: str | None, compress: int, program: str = "pg_dump"):
        self.db = db
        args = [program, "--format=custom", f"--compress={compress}", "--no-password"]
        if snapshot_id:
            args.append(f"--snapshot={snapshot_id}")
        try:
            self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            env=client_environment(db), bufsize=0)
        except FileNotFoundError:
            raise DumpError(f"{program} not found on PATH: install the PostgreSQL client programs") from None
        self._stderr = StderrTail(self.process.stderr, lines=20)

    @property
    def pid(self) -> int:
        return self.process.pid

    def chunks(self, size: int = 1024 * 1024) -> Iterator[bytes]:
        while chunk := self.process.stdout.read(size):
            yield chunk

    def finish(self) -> None:
        """Wait for pg_dump; raise DumpError with its own words if it failed or was killed."""
        returncode = self.process.wait()
        if returncode != 0:
            how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with status {returncode}"
            detail = self._stderr.text() or "no message"
            raise DumpError(f"pg_dump of {describe(self.db)} {how}: {redact(detail)}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class ArchiveReader:
    """`pg_restore --file=/dev/null` fed on stdin: it parses the table of contents and
    decompresses every data block, which `pg_restore --list` never touches. The caller feeds
    chunks as it reads them, so the archive is checked in the same pass as its checksum.

    pg_restore reads its input a few kilobytes at a time. A plain blocking write of a large chunk
    into the pipe would wake it and us on every few kilobytes it takes (about 200,000 context
    switches per GiB, about 15% of the wall time on two cores). Instead a piece is written only once
    the pipe has room for all of it, so each write completes at once and pg_restore drains a full
    pipe undisturbed while we read and hash the next chunk."""

    checker = "pg_restore"
    _POLL_SECONDS = 0.0005  # pg_restore drains ~100 KiB in that time: the pipe never runs dry

    def __init__(self, program: str = "pg_restore"):
        try:
            self.process = subprocess.Popen([program, "--file=/dev/null"], stdin=subprocess.PIPE,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, bufsize=0)
        except FileNotFoundError:
            raise DumpError(f"{program} not found on PATH: install the PostgreSQL client programs") from None
        self._fd = self.process.stdin.fileno()
        self._pipe_bytes = _widen_pipe(self._fd)
        self._piece = max(4096, self._pipe_bytes // 4)
        self._stderr = StderrTail(self.process.stderr, lines=10)
        self._closed_early = False

    def feed(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        for start in range(0, len(view), self._piece):
            if self._closed_early:
                return  # pg_restore already gave up; the caller still reads on for its checksum
            piece = view[start:start + self._piece]
            self._wait_for_room(len(piece))
            try:
                self.process.stdin.write(piece)
            except (BrokenPipeError, ConnectionResetError):
                self._closed_early = True

    def _wait_for_room(self, size: int) -> None:
        while True:
            unread = _unread_bytes(self._fd)
            if unread is None or unread + size <= self._pipe_bytes:
                return  # room (or no way to tell: then the write simply blocks)
            if self.process.poll() is not None:
                return  # it exited with input unread: the write fails and says so
            time.sleep(self._POLL_SECONDS)

    def finish(self) -> tuple[bool, str]:
        try:
            self.process.stdin.close()
        except BrokenPipeError:
            pass
        returncode = self.process.wait()
        detail = self._stderr.text().replace("pg_restore: ", "")
        if returncode != 0:
            return False, f"pg_restore failed: {detail or f'exit status {returncode}'}"
        if self._closed_early:
            return False, "pg_restore stopped reading before the end of the archive"
        return True, ""

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


_F_SETPIPE_SZ, _F_GETPIPE_SZ = 1031, 1032  # Linux fcntl commands


def _widen_pipe(fd: int, size: int = 1024 * 1024) -> int:
    """Fewer, larger pipe writes: the reader and pg_restore overlap instead of taking turns.
    Returns the pipe's capacity in bytes."""
    import fcntl

    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, size)
    except OSError:
        pass  # above /proc/sys/fs/pipe-max-size, or not Linux
    try:
        return fcntl.fcntl(fd, _F_GETPIPE_SZ)
    except OSError:
        return 64 * 1024  # the Linux default; elsewhere only a hint


def _unread_bytes(fd: int) -> int | None:
    """Bytes written to a pipe and not yet read (FIONREAD); None where the platform cannot say."""
    import fcntl
    import struct
    import termios

    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    except OSError:
        return None
