"""Redis health decisions: PING latency, memory against maxmemory, evictions and rejected
connections since the previous run, clients against maxclients, persistence, replication.
Pure: what `maint.tasks.redis.sample_redis` read from PING and INFO comes in, findings go out.

Every check gives one finding per server (`RedisConfig.address`), ok included, so that a page
opened for it is resolved by the first good run. Counters that only grow (evicted_keys,
rejected_connections) are judged by their increase since the previous run's `RedisCounters`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping, NamedTuple
from urllib.parse import urlsplit

from maint.config import RedisConfig
from maint.durations import format_duration
from maint.errors import RedisError
from maint.report import Finding, Severity

MiB = 1024 * 1024


@dataclass(frozen=True)
class RedisCounters:
    """What the next run compares against: the counters, and what tells a restart (run_id, uptime)."""

    sampled_at: datetime
    run_id: str
    uptime_in_seconds: int
    evicted_keys: int
    rejected_connections: int

    def to_dict(self) -> dict[str, Any]:
        return {"sampled_at": self.sampled_at.isoformat(), "run_id": self.run_id,
                "uptime_in_seconds": self.uptime_in_seconds, "evicted_keys": self.evicted_keys,
                "rejected_connections": self.rejected_connections}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RedisCounters | None:
        """None for nothing stored or for what no version of maint wrote: then it is a first run."""
        if not isinstance(data, Mapping):
            return None
        try:
            sampled_at = datetime.fromisoformat(data["sampled_at"])
            return cls(sampled_at if sampled_at.tzinfo else sampled_at.replace(tzinfo=timezone.utc),
                       str(data["run_id"]), int(data["uptime_in_seconds"]), int(data["evicted_keys"]),
                       int(data["rejected_connections"]))
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class RedisSample:
    """One server's PING round trip and the INFO fields the checks read, as plain values."""

    ping_latency: timedelta
    redis_version: str
    run_id: str
    uptime_in_seconds: int
    used_memory: int
    maxmemory: int  # 0: no limit
    maxmemory_policy: str
    evicted_keys: int
    rejected_connections: int
    connected_clients: int
    maxclients: int | None  # None: INFO lacks it (Redis < 7) and CONFIG GET is not allowed
    rdb_last_bgsave_status: str
    rdb_last_save_time: datetime | None
    rdb_changes_since_last_save: int
    aof_enabled: bool
    aof_last_write_status: str
    aof_last_bgrewrite_status: str
    role: str  # "master" or "slave"
    connected_slaves: int = 0
    master_host: str = ""
    master_port: int = 0
    master_link_status: str = ""  # "up" or "down" on a replica
    master_link_down_since_seconds: int | None = None  # -1 or None: never up since the replica started
    master_sync_in_progress: bool = False

    @classmethod
    def from_info(cls, info: Mapping[str, Any], ping_latency: timedelta, maxclients: int | None = None,
                  ) -> RedisSample:
        """From INFO as redis-py parses it (numbers already int); `maxclients` when INFO lacks it."""
        def number(key: str, default: int = 0) -> int:
            value = info.get(key, default)
            try:
                return int(value)
            except (TypeError, ValueError):
                return default

        def text(key: str, default: str = "") -> str:
            value = info.get(key)
            return default if value is None else str(value)

        last_save = number("rdb_last_save_time", -1)
        link_down = info.get("master_link_down_since_seconds")
        return cls(
            ping_latency=ping_latency, redis_version=text("redis_version", "?"), run_id=text("run_id"),
            uptime_in_seconds=number("uptime_in_seconds"), used_memory=number("used_memory"),
            maxmemory=number("maxmemory"), maxmemory_policy=text("maxmemory_policy", "?"),
            evicted_keys=number("evicted_keys"), rejected_connections=number("rejected_connections"),
            connected_clients=number("connected_clients"),
            maxclients=number("maxclients") if "maxclients" in info else maxclients,
            rdb_last_bgsave_status=text("rdb_last_bgsave_status", "ok"),
            rdb_last_save_time=datetime.fromtimestamp(last_save, timezone.utc) if last_save > 0 else None,
            rdb_changes_since_last_save=number("rdb_changes_since_last_save"),
            aof_enabled=number("aof_enabled") == 1, aof_last_write_status=text("aof_last_write_status", "ok"),
            aof_last_bgrewrite_status=text("aof_last_bgrewrite_status", "ok"), role=text("role", "master"),
            connected_slaves=number("connected_slaves"), master_host=text("master_host"),
            master_port=number("master_port"), master_link_status=text("master_link_status"),
            master_link_down_since_seconds=None if link_down is None else number("master_link_down_since_seconds"),
            master_sync_in_progress=number("master_sync_in_progress") == 1,
        )

    def counters(self, now: datetime) -> RedisCounters:
        return RedisCounters(now, self.run_id, self.uptime_in_seconds, self.evicted_keys, self.rejected_connections)

    @property
    def is_replica(self) -> bool:
        return self.role in ("slave", "replica")


def _moment(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _uptime(sample: RedisSample) -> str:
    return format_duration(timedelta(seconds=sample.uptime_in_seconds))


def _mib(size: int) -> str:
    return f"{size / MiB:.1f} MiB"


def _latency(latency: timedelta) -> str:
    # format_duration rounds to whole milliseconds, and a healthy PING is a fraction of one.
    return f"{latency.total_seconds() * 1000:.1f}ms" if latency < timedelta(seconds=1) else format_duration(latency)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


class RedisEndpoint(NamedTuple):
    host: str
    port: int
    db: int
    tls: bool
    username: str | None


def redis_endpoint(config: RedisConfig) -> RedisEndpoint:
    """Where and how to connect, from url (rediss:// is TLS) or host/port; a password in the url
    is never read: secrets come from password_env."""
    if config.url is not None:
        parts = urlsplit(config.url)
        return RedisEndpoint(parts.hostname or "", parts.port or 6379, int(parts.path.lstrip("/") or 0),
                             config.tls or parts.scheme == "rediss", config.username or parts.username)
    return RedisEndpoint(config.host or "", config.port, config.db, config.tls, config.username)


def redis_cli(config: RedisConfig, command: str = "") -> str:
    """The redis-cli invocation that reaches this server, for hints; never with the password:
    `--askpass` prompts for it."""
    host, port, _, tls, user = redis_endpoint(config)
    words = ["redis-cli", "-h", str(host), "-p", str(port)]
    if tls:
        words += ["--tls"] + (["--cacert", config.ca_file] if config.ca_file else [])
    if user:
        words += ["--user", user]
    if config.password_env or user:
        words.append("--askpass")
    return f"`{' '.join(words + ([command] if command else []))}`"


# --- the checks ----------------------------------------------------------------------------------

def assess_ping(config: RedisConfig, sample: RedisSample) -> Finding:
    message = (f"Redis {sample.redis_version} ({sample.role}, up {_uptime(sample)}) "
               f"answered PING in {_latency(sample.ping_latency)}")
    if sample.ping_latency > config.max_latency:
        return Finding("redis-ping", config.address, Severity.WARNING,
                       f"{message}; max_latency is {_latency(config.max_latency)}",
                       f"slow: look for slow commands ({redis_cli(config, 'SLOWLOG GET 10')}), a fork for "
                       f"a save, swapping, or the network ({redis_cli(config, '--latency')})")
    return Finding("redis-ping", config.address, Severity.OK, message)


def assess_memory(config: RedisConfig, sample: RedisSample) -> Finding:
    if sample.maxmemory == 0:
        return Finding("redis-memory", config.address, Severity.OK,
                       f"{_mib(sample.used_memory)} used; no maxmemory limit: nothing is evicted, but the "
                       "server grows until the machine runs out of memory")
    share = sample.used_memory / sample.maxmemory
    message = (f"{_mib(sample.used_memory)} used of maxmemory {_mib(sample.maxmemory)} ({share:.0%}), "
               f"policy {sample.maxmemory_policy}")
    if sample.maxmemory_policy == "noeviction":
        consequence = "at maxmemory every write fails with OOM"
    elif sample.maxmemory_policy.startswith("volatile"):
        consequence = "only keys with a TTL are evicted; writes fail with OOM when none is left"
    else:
        consequence = "keys are evicted to make room"
    hint = (f"{consequence}: find the big keys ({redis_cli(config, '--bigkeys')}), then delete or expire "
            "what should not be there, or raise maxmemory (CONFIG SET maxmemory, and in the config file)")
    if share >= config.memory_critical and sample.maxmemory_policy.startswith("allkeys"):
        # A cache that evicts any key is meant to run full: writes still succeed. Never a page;
        # redis-evictions says whether it is evicting more than it used to.
        return Finding("redis-memory", config.address, Severity.WARNING,
                       f"{message}; memory_critical is {config.memory_critical:.0%}, but this policy evicts "
                       "keys instead of refusing writes", hint)
    if share >= config.memory_critical:
        return Finding("redis-memory", config.address, Severity.CRITICAL,
                       f"{message}; memory_critical is {config.memory_critical:.0%}", hint)
    if share >= config.memory_warning:
        return Finding("redis-memory", config.address, Severity.WARNING,
                       f"{message}; memory_warning is {config.memory_warning:.0%}", hint)
    return Finding("redis-memory", config.address, Severity.OK, message)


def _since_previous(sample: RedisSample, previous: RedisCounters | None, field: str) -> tuple[int, str]:
    """The increase of a counter since the previous run, and since when, in words. After a
    restart (another run_id, a lower uptime, or the counter went down) the counter began again
    at zero, so all of it is new; on a first run there is nothing to compare: its total."""
    current = getattr(sample, field)
    uptime = _uptime(sample)
    if previous is None:
        return current, f"since the server started (up {uptime}; no previous check to compare)"
    restarted = ((previous.run_id and sample.run_id and previous.run_id != sample.run_id)
                 or sample.uptime_in_seconds < previous.uptime_in_seconds or current < getattr(previous, field))
    if restarted:
        return current, (f"since the server restarted {uptime} ago (after the last check, at "
                         f"{_moment(previous.sampled_at)})")
    return current - getattr(previous, field), f"since the last check (at {_moment(previous.sampled_at)})"


def assess_evictions(config: RedisConfig, sample: RedisSample, previous: RedisCounters | None) -> Finding:
    evicted, since = _since_previous(sample, previous, "evicted_keys")
    message = f"{_plural(evicted, 'key')} evicted {since}, policy {sample.maxmemory_policy}"
    if previous is None or evicted == 0:
        return Finding("redis-evictions", config.address, Severity.OK, message)
    return Finding("redis-evictions", config.address, Severity.WARNING, message,
                   "the data set outgrew maxmemory: if this is a cache, is its hit rate still fine "
                   f"({redis_cli(config, 'INFO stats')}: keyspace_hits, keyspace_misses)? if not, raise "
                   f"maxmemory or find what grew ({redis_cli(config, '--bigkeys')})")


def assess_clients(config: RedisConfig, sample: RedisSample, previous: RedisCounters | None) -> Finding:
    rejected, since = _since_previous(sample, previous, "rejected_connections")
    connected = f"{_plural(sample.connected_clients, 'client')} connected"
    if sample.maxclients:
        share = sample.connected_clients / sample.maxclients
        message = f"{connected} of maxclients {sample.maxclients} ({share:.0%})"
    else:
        share, message = 0.0, f"{connected} (maxclients unknown: CONFIG is not allowed)"
    message += f"; {_plural(rejected, 'connection')} rejected {since}"
    hint = (f"find who holds the connections ({redis_cli(config, 'CLIENT LIST')}): a pool too large or "
            "leaking; raise maxclients (CONFIG SET maxclients, and the open-files limit) only if the load is real")
    if previous is not None and rejected > 0:
        return Finding("redis-clients", config.address, Severity.WARNING,
                       f"{message}: maxclients was reached and clients were turned away", hint)
    if sample.maxclients and share >= config.clients_warning:
        return Finding("redis-clients", config.address, Severity.WARNING,
                       f"{message}; clients_warning is {config.clients_warning:.0%}", hint)
    return Finding("redis-clients", config.address, Severity.OK, message)


def assess_persistence(config: RedisConfig, sample: RedisSample, now: datetime) -> Finding:
    last = sample.rdb_last_save_time
    saved = f"last RDB save at {_moment(last)} ({format_duration(now - last)} ago)" if last else "no RDB save yet"
    message = f"{saved}, {sample.rdb_changes_since_last_save} changes since"
    failed = []
    if sample.rdb_last_bgsave_status != "ok":
        failed.append("the last background save (BGSAVE) failed: "
                      f"rdb_last_bgsave_status {sample.rdb_last_bgsave_status}")
    if sample.aof_enabled and sample.aof_last_write_status != "ok":
        failed.append(f"writing the append-only file failed: aof_last_write_status {sample.aof_last_write_status}")
    if sample.aof_enabled and sample.aof_last_bgrewrite_status != "ok":
        failed.append(f"the last AOF rewrite failed: aof_last_bgrewrite_status {sample.aof_last_bgrewrite_status}")
    if failed:
        return Finding("redis-persistence", config.address, Severity.CRITICAL, f"{'; '.join(failed)}; {message}",
                       "with stop-writes-on-bgsave-error (the default) the server refuses writes until a save "
                       f"succeeds: read its log, check the disk under {redis_cli(config, 'CONFIG GET dir')} "
                       f"(full? writable?), then {redis_cli(config, 'BGSAVE')}")
    aof = "; AOF on" if sample.aof_enabled else "; AOF off"
    return Finding("redis-persistence", config.address, Severity.OK, f"{message}{aof}")


def assess_replication(config: RedisConfig, sample: RedisSample) -> Finding:
    if not sample.is_replica:
        return Finding("redis-replication", config.address, Severity.OK,
                       f"primary with {_plural(sample.connected_slaves, 'connected replica')}")
    primary = f"{sample.master_host}:{sample.master_port}"
    if sample.master_link_status == "up":
        return Finding("redis-replication", config.address, Severity.OK, f"replica of {primary}, link up")
    down = sample.master_link_down_since_seconds
    if down is None or down < 0:
        how_long = f"and has not been up since the replica started {_uptime(sample)} ago"
    else:
        how_long = f"for {format_duration(timedelta(seconds=down))}"
    syncing = " (a sync is in progress)" if sample.master_sync_in_progress else ""
    return Finding("redis-replication", config.address, Severity.CRITICAL,
                   f"replica of {primary}: the link to the primary is down {how_long}{syncing}; "
                   "its data is getting stale",
                   f"is the primary up (`redis-cli -h {sample.master_host} -p {sample.master_port} PING`)? "
                   f"read the replica's log and {redis_cli(config, 'INFO replication')}; if the primary is "
                   "gone for good, promote a replica (REPLICAOF NO ONE) and repoint the others")


def assess_redis(config: RedisConfig, sample: RedisSample, previous: RedisCounters | None,
                 now: datetime) -> list[Finding]:
    """Every check for one server that answered: one finding each, ok included."""
    return [
        assess_ping(config, sample),
        assess_memory(config, sample),
        assess_evictions(config, sample, previous),
        assess_clients(config, sample, previous),
        assess_persistence(config, sample, now),
        assess_replication(config, sample),
    ]


# --- a server that did not answer ----------------------------------------------------------------

def _unreachable_text(config: RedisConfig, kind: str) -> tuple[str, str]:
    ping = redis_cli(config, "PING")
    host, port, *_ = redis_endpoint(config)
    secret = f"${config.password_env}" if config.password_env else "the password"
    return {
        "refused": ("connection refused: nothing listens there",
                    f"is redis-server running (`systemctl status redis-server`, its pod)? then {ping}"),
        "timeout": (f"no answer within {format_duration(config.timeout)}",
                    "is the server stopped, overloaded, or blocked by a long command or a fork? is the network "
                    f"path open (firewall, security group)? try {ping} and {redis_cli(config, '--latency')}"),
        "wrong-password": ("authentication failed: wrong password or username",
                           f"does {secret} hold the current password of user '{config.username or 'default'}'? "
                           f"check with {ping}; ACL users: `ACL LIST` on the server"),
        "no-password": ("authentication required: the server has a password and none was given",
                        "set password_env in this [[health_check.redis]] entry to the variable holding it"),
        "password-not-set": ("authentication failed: a password was given but the server has none",
                             f"remove password_env from this entry, or set requirepass on the server; {ping}"),
        "no-permission": ("the user may not run the checks' commands (NOPERM)",
                          f"grant it `+ping +info +config|get` (ACL SETUSER {config.username or 'default'} ...)"),
        "tls": ("TLS handshake failed",
                "check ca_file against the CA that issued the server's certificate, its expiry and its "
                f"names (`openssl s_client -connect {host}:{port} -showcerts`); does the port speak TLS? then {ping}"),
        "not-tls": ("the server closed the connection at once: does it expect TLS?",
                    f"if the port speaks TLS only, set tls = true (or a rediss:// url); then {ping}"),
        "loading": ("the server is loading its data set into memory and answers nothing else yet",
                    f"wait for it and check again ({redis_cli(config, 'INFO persistence')}: loading_eta_seconds)"),
        "error": ("the server answered a check's command with an error",
                  f"was PING or INFO renamed or disabled on this server? try {redis_cli(config, 'INFO')}"),
    }.get(kind, ("cannot reach the server", f"is the name resolvable and the server up? {ping}"))


def redis_unreachable(config: RedisConfig, exc: RedisError) -> Finding:
    """The "redis-ping" finding of a server that could not be sampled: the same check and
    subject as its ok finding, so a page opened for it resolves once it answers again."""
    message, hint = _unreachable_text(config, exc.kind)
    # The library's reason unless it only repeats ours ("Connection refused").
    detail = f" ({exc.detail})" if exc.detail and exc.detail.lower() not in message.lower() else ""
    return Finding("redis-ping", config.address, Severity.CRITICAL, f"{message}{detail}", hint)
