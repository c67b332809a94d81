"""One run of a duty per target, however it was started: the lock's key and holder label, the lock
object a store holds, when such an object was left by a dead run, and the findings. Pure.

A duty that changes something (backup, vacuum, restore-test, dr-drill, backup-retention) takes a
lock on what it changes before it changes anything. Against a database it is a session-level
advisory lock on a connection held for the whole run (`maint.tasks.postgres.lock`), so a run that
dies takes its lock with it; in a store it is a lock object created only where none exists
(`maint.tasks.storage.lock`), which a dead run cannot remove, so it carries its own expiry.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from maint.durations import format_duration
from maint.report import Finding, Severity

CHECK = "lock"
# PostgreSQL keeps NAMEDATALEN - 1 bytes of application_name, in printable ASCII.
LABEL_MAX_BYTES = 63


def lock_key(duty: str, target: str) -> int:
    """The advisory lock key of (duty, target): a signed 64-bit integer, the same on every host and
    in every Python (never `hash()`, which is salted per process)."""
    digest = hashlib.blake2b(f"maint:{duty}:{target}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def advisory_lock_ids(key: int) -> tuple[int, int]:
    """(classid, objid) as pg_locks shows `pg_advisory_lock(key)`: the key's high and low 32 bits
    as unsigned oids (objsubid is 1 for the one-bigint form)."""
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    return unsigned >> 32, unsigned & 0xFFFF_FFFF


def holder_label(duty: str, flow_run_id: str | None, host: str, pid: int) -> str:
    """Who holds a lock, as other runs will read it: `maint backup run 1f0c3a9e db-runner-1 pid 4242`.

    At most 63 printable ASCII bytes, PostgreSQL's limit for application_name: the flow run id is
    shortened to its first 8 characters (enough to find the run in the UI), the host is cut to fit."""
    run = flow_run_id[:8] if flow_run_id else "cli"
    head, tail = f"maint {duty} run {run} ", f" pid {pid}"
    host = "".join(c if " " <= c <= "~" else "?" for c in host)
    return head + host[:max(0, LABEL_MAX_BYTES - len(head) - len(tail))] + tail


def store_lock_name(duty: str) -> str:
    """The lock object's name in a store: hidden (a local store lists no dot-file), and with no
    suffix a backup has, so no listing of backups ever takes it for one."""
    return f".maint-{duty}.lock"


@dataclass(frozen=True)
class LockRecord:
    """What a store's lock object holds."""

    holder: str
    acquired_at: datetime
    expires_at: datetime  # after this the object is a dead run's, and the next run takes it over

    @classmethod
    def new(cls, holder: str, now: datetime, ttl: timedelta) -> "LockRecord":
        return cls(holder, now, now + ttl)

    def to_json(self) -> bytes:
        return json.dumps({"holder": self.holder, "acquired_at": self.acquired_at.isoformat(),
                           "expires_at": self.expires_at.isoformat()}).encode()

    @classmethod
    def from_object(cls, data: bytes, created_at: datetime, ttl: timedelta) -> "LockRecord":
        """The record in a lock object. One that cannot be read (not maint's, or damaged) counts as
        taken when the store created the object, for this run's `ttl`."""
        try:
            fields = json.loads(data)
            return cls(str(fields["holder"]), _aware(fields["acquired_at"]), _aware(fields["expires_at"]))
        except (ValueError, TypeError, KeyError):
            return cls("unknown (the lock object cannot be read)", created_at, created_at + ttl)

    def is_stale(self, now: datetime) -> bool:
        """Left by a run that died: no live run holds a lock past the expiry it wrote."""
        return now >= self.expires_at


def _aware(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return moment


@dataclass(frozen=True)
class LockHolder:
    """Whoever holds (or held) a lock, as far as it can be seen."""

    label: str  # its application_name, or the holder a lock object names
    since: datetime | None = None
    address: str | None = None  # the client address of its session
    backend_pid: int | None = None  # its session, where the lock is an advisory lock
    expires_at: datetime | None = None  # where the lock is an object in a store
    lock_url: str | None = None

    @classmethod
    def of_record(cls, record: LockRecord, lock_url: str) -> "LockHolder":
        return cls(record.holder, record.acquired_at, expires_at=record.expires_at, lock_url=lock_url)

    def describe(self, now: datetime) -> str:
        who = f"'{self.label}'" if self.label else "a session without an application_name"
        if self.address:
            who += f" from {self.address}"
        if self.backend_pid is not None:
            who += f" (backend pid {self.backend_pid})"
        if self.since is not None:
            who += f", since {_moment(self.since)} ({format_duration(now - self.since)} ago)"
        return who


def _moment(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def refused_finding(duty: str, subject: str, holder: LockHolder | None, waited: timedelta,
                    now: datetime) -> Finding:
    """Another run holds the lock: this one did nothing. Names the holder and what to do."""
    waiting = f"this run waited {format_duration(waited)} ([locks] wait) and did nothing"
    if holder is None:
        return Finding(CHECK, subject, Severity.WARNING,
                       f"another {duty} run held the lock on {subject} and ended before it could be named; {waiting}",
                       "run it again: the lock is free now")
    if holder.backend_pid is not None:
        stop = (f"if it is stuck, stopping it frees the lock, and so does ending its session: "
                f"SELECT pg_terminate_backend({holder.backend_pid})")
    elif holder.expires_at is not None:
        stop = (f"if that run is gone, its lock is taken over after {_moment(holder.expires_at)} "
                f"([locks] store_lock_ttl), or delete {holder.lock_url or 'the lock object'} by hand")
    else:
        stop = "if it is stuck, stop it"
    return Finding(CHECK, subject, Severity.WARNING,
                   f"another {duty} run holds the lock on {subject}: {holder.describe(now)}; {waiting}",
                   f"let that run finish (or set [locks] wait to queue behind it); {stop}")


def held_finding(duty: str, subject: str, held_for: timedelta, now: datetime, *,
                 taken_over: LockHolder | None = None, lost: bool = False,
                 release_error: str | None = None) -> Finding:
    """The one lock finding of a run that held the lock: ok, unless it took the lock over from a
    dead run, lost it on the way or could not release it (a later clean run's ok resolves each)."""
    held = f"this run held the {duty} lock on {subject} for {format_duration(held_for)}"
    if release_error is not None:
        return Finding(CHECK, subject, Severity.WARNING, f"{held}, but could not release it: {release_error}",
                       "later runs find it held until it expires ([locks] store_lock_ttl): delete the lock "
                       "object by hand once the store answers again")
    if lost:
        return Finding(CHECK, subject, Severity.WARNING,
                       f"{held}, but lost it before the end: another {duty} run may have overlapped it",
                       "was its session ended (pg_terminate_backend, a restart, a network cut), or did the "
                       "run outlive [locks] store_lock_ttl so that its lock object was taken over?")
    if taken_over is not None:
        return Finding(CHECK, subject, Severity.WARNING,
                       f"{held}; it took the lock over from {taken_over.describe(now)}, whose lock had expired "
                       f"at {_moment(taken_over.expires_at or now)} without being released",
                       "that run died or was killed: look for its flow run; if it is in fact still running, "
                       "stop it and raise [locks] store_lock_ttl above the duty's longest run")
    return Finding(CHECK, subject, Severity.OK, f"{held}, then released it")


def unavailable_finding(subject: str, reason: str) -> Finding:
    """The lock could not even be asked for (the database or store refused): nothing was changed."""
    return Finding(CHECK, subject, Severity.CRITICAL, f"could not take the lock, so nothing was done here: {reason}",
                   "fix what the message names; the other targets went ahead")
