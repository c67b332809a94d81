"""Redis part of the health check: the decisions table-driven with a fixed NOW; the system module
with the real redis-py against real redis-server processes the test starts (a password, TLS
from trustme, maxmemory with evictions, a replica, a failed background save, one stopped)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import trustme

from maint.config import RedisConfig
from maint.errors import RedisError
from maint.redis_info import (RedisCounters, RedisSample, assess_clients, assess_evictions, assess_memory,
                              assess_persistence, assess_ping, assess_redis, assess_replication, redis_cli,
                              redis_endpoint, redis_unreachable)
from maint.report import Severity
from maint.tasks.environment import free_port
from maint.tasks.redis import sample_redis
from tests.conftest import system_fixture, wait_for
from tests.test_notify import receivers  # noqa: F401  (a fixture)

NOW = datetime(2026, 3, 2, 7, 0, tzinfo=timezone.utc)
PREVIOUS_RUN = NOW - timedelta(days=1)
PASSWORD_ENV = "MAINT_TEST_REDIS_PASSWORD"
PASSWORD = "r3dis-pw-5e1c9b"
CHECKS = ["redis-ping", "redis-memory", "redis-evictions", "redis-clients", "redis-persistence", "redis-replication"]
MiB = 1024 * 1024


# --- decisions -----------------------------------------------------------------------------------

CONFIG = RedisConfig(host="cache.internal", port=6380, max_latency="50ms")


def _sample(**kw) -> RedisSample:
    base = dict(ping_latency=timedelta(milliseconds=1), redis_version="7.0.15", run_id="a" * 40,
                uptime_in_seconds=3 * 86400, used_memory=100 * MiB, maxmemory=1000 * MiB,
                maxmemory_policy="allkeys-lru", evicted_keys=500, rejected_connections=7, connected_clients=10,
                maxclients=100, rdb_last_bgsave_status="ok", rdb_last_save_time=NOW - timedelta(minutes=30),
                rdb_changes_since_last_save=42, aof_enabled=False, aof_last_write_status="ok",
                aof_last_bgrewrite_status="ok", role="master", connected_slaves=2)
    return RedisSample(**{**base, **kw})


def _previous(**kw) -> RedisCounters:
    base = dict(sampled_at=PREVIOUS_RUN, run_id="a" * 40, uptime_in_seconds=2 * 86400, evicted_keys=500,
                rejected_connections=7)
    return RedisCounters(**{**base, **kw})


def test_every_check_gives_one_finding_naming_the_server():
    findings = assess_redis(CONFIG, _sample(), _previous(), NOW)
    assert [f.check for f in findings] == CHECKS
    assert {f.subject for f in findings} == {"cache.internal:6380/0"}
    assert all(f.severity is Severity.OK for f in findings), findings


@pytest.mark.parametrize("latency_ms, severity, words", [
    (0.3, Severity.OK, "answered PING in 0.3ms"),
    (50, Severity.OK, "in 50.0ms"),
    (51, Severity.WARNING, "in 51.0ms; max_latency is 50.0ms"),
    (2500, Severity.WARNING, "in 2.5s"),
])
def test_ping_latency_against_max_latency(latency_ms, severity, words):
    finding = assess_ping(CONFIG, _sample(ping_latency=timedelta(milliseconds=latency_ms)))
    assert finding.severity is severity and words in finding.message
    assert "Redis 7.0.15 (master, up 3d)" in finding.message
    assert ("SLOWLOG GET" in finding.hint) is (severity is Severity.WARNING)


@pytest.mark.parametrize("used_mib, max_mib, policy, severity, words", [
    (100, 0, "noeviction", Severity.OK, "100.0 MiB used; no maxmemory limit"),
    (799, 1000, "allkeys-lru", Severity.OK, "799.0 MiB used of maxmemory 1000.0 MiB (80%), policy allkeys-lru"),
    (800, 1000, "allkeys-lru", Severity.WARNING, "(80%), policy allkeys-lru; memory_warning is 80%"),
    (949, 1000, "volatile-ttl", Severity.WARNING, "policy volatile-ttl; memory_warning"),
    (950, 1000, "noeviction", Severity.CRITICAL, "(95%), policy noeviction; memory_critical is 95%"),
    (1010, 1000, "allkeys-lfu", Severity.WARNING, "(101%), policy allkeys-lfu; memory_critical is 95%, but this "
                                                  "policy evicts keys instead of refusing writes"),
    (1010, 1000, "volatile-lru", Severity.CRITICAL, "(101%)"),
])
def test_memory_share_of_maxmemory(used_mib, max_mib, policy, severity, words):
    finding = assess_memory(CONFIG, _sample(used_memory=used_mib * MiB, maxmemory=max_mib * MiB,
                                            maxmemory_policy=policy))
    assert finding.severity is severity and words in finding.message
    if severity is not Severity.OK:
        assert "--bigkeys" in finding.hint and "redis-cli -h cache.internal -p 6380" in finding.hint
    if policy == "noeviction" and severity is Severity.CRITICAL:
        assert "every write fails with OOM" in finding.hint


@pytest.mark.parametrize("sample, previous, severity, words", [
    # First run: nothing to compare, the total is information only.
    (_sample(evicted_keys=500), None, Severity.OK, "500 keys evicted since the server started (up 3d; no previous"),
    (_sample(evicted_keys=500), _previous(evicted_keys=500), Severity.OK,
     "0 keys evicted since the last check (at 2026-03-01 07:00:00Z)"),
    (_sample(evicted_keys=1234), _previous(evicted_keys=500), Severity.WARNING,
     "734 keys evicted since the last check (at 2026-03-01 07:00:00Z), policy allkeys-lru"),
    # Restarts: the counter began again at zero, so all of it is new.
    (_sample(evicted_keys=30, uptime_in_seconds=600, run_id="b" * 40), _previous(), Severity.WARNING,
     "30 keys evicted since the server restarted 10m ago"),
    (_sample(evicted_keys=900, uptime_in_seconds=600, run_id=""), _previous(run_id=""), Severity.WARNING,
     "900 keys evicted since the server restarted"),
    (_sample(evicted_keys=0, run_id="b" * 40), _previous(), Severity.OK, "0 keys evicted since the server restarted"),
])
def test_evictions_since_the_previous_run(sample, previous, severity, words):
    finding = assess_evictions(CONFIG, sample, previous)
    assert finding.severity is severity and words in finding.message, finding.message


@pytest.mark.parametrize("sample, previous, severity, words", [
    (_sample(connected_clients=79), _previous(), Severity.OK, "79 clients connected of maxclients 100 (79%)"),
    (_sample(connected_clients=80), _previous(), Severity.WARNING,
     "(80%); 0 connections rejected since the last check (at 2026-03-01 07:00:00Z); clients_warning is 80%"),
    (_sample(rejected_connections=9), _previous(), Severity.WARNING,
     "2 connections rejected since the last check (at 2026-03-01 07:00:00Z): maxclients was reached"),
    (_sample(rejected_connections=9), None, Severity.OK, "9 connections rejected since the server started"),
    (_sample(rejected_connections=2, run_id="b" * 40), _previous(), Severity.WARNING, "2 connections rejected since "
                                                                                    "the server restarted"),
    (_sample(connected_clients=5000, maxclients=None), _previous(), Severity.OK,
     "5000 clients connected (maxclients unknown: CONFIG is not allowed)"),
])
def test_clients_against_maxclients_and_rejections(sample, previous, severity, words):
    finding = assess_clients(CONFIG, sample, previous)
    assert finding.severity is severity and words in finding.message, finding.message
    assert ("CLIENT LIST" in finding.hint) is (severity is not Severity.OK)


@pytest.mark.parametrize("sample, severity, words", [
    (_sample(), Severity.OK, "last RDB save at 2026-03-02 06:30:00Z (30m ago), 42 changes since; AOF off"),
    (_sample(rdb_last_save_time=None), Severity.OK, "no RDB save yet"),
    (_sample(rdb_last_bgsave_status="err"), Severity.CRITICAL, "the last background save (BGSAVE) failed"),
    (_sample(aof_enabled=True, aof_last_write_status="err"), Severity.CRITICAL, "writing the append-only file failed"),
    (_sample(aof_enabled=True, aof_last_bgrewrite_status="err"), Severity.CRITICAL, "the last AOF rewrite failed"),
    # AOF off: a stale status from when it was on says nothing about the server now.
    (_sample(aof_enabled=False, aof_last_write_status="err"), Severity.OK, "AOF off"),
])
def test_persistence_status(sample, severity, words):
    finding = assess_persistence(CONFIG, sample, NOW)
    assert finding.severity is severity and words in finding.message, finding.message
    if severity is Severity.CRITICAL:
        assert "stop-writes-on-bgsave-error" in finding.hint and "CONFIG GET dir" in finding.hint


@pytest.mark.parametrize("sample, severity, words", [
    (_sample(), Severity.OK, "primary with 2 connected replicas"),
    (_sample(role="slave", master_host="10.0.0.5", master_port=6379, master_link_status="up"), Severity.OK,
     "replica of 10.0.0.5:6379, link up"),
    (_sample(role="slave", master_host="10.0.0.5", master_port=6379, master_link_status="down",
             master_link_down_since_seconds=125), Severity.CRITICAL, "the link to the primary is down for 2m5s"),
    (_sample(role="slave", master_host="10.0.0.5", master_port=6379, master_link_status="down",
             master_link_down_since_seconds=-1, uptime_in_seconds=90, master_sync_in_progress=True),
     Severity.CRITICAL, "has not been up since the replica started 1m30s ago (a sync is in progress)"),
])
def test_replication_link(sample, severity, words):
    finding = assess_replication(CONFIG, sample)
    assert finding.severity is severity and words in finding.message, finding.message
    if severity is Severity.CRITICAL:
        assert "redis-cli -h 10.0.0.5 -p 6379 PING" in finding.hint


UNREACHABLE = {
    "refused": "connection refused",
    "timeout": "no answer within 5s",
    "wrong-password": "authentication failed: wrong password",
    "no-password": "authentication required",
    "password-not-set": "authentication failed: a password was given but the server has none",
    "no-permission": "the user may not run the checks' commands (NOPERM)",
    "tls": "TLS handshake failed",
    "not-tls": "the server closed the connection at once: does it expect TLS?",
    "loading": "the server is loading its data set",
    "connect": "cannot reach the server",
    "error": "the server answered a check's command with an error",
}


@pytest.mark.parametrize("kind, words", UNREACHABLE.items())
def test_unreachable_is_a_critical_ping_finding_per_cause(kind, words):
    config = CONFIG.model_copy(update={"password_env": PASSWORD_ENV})
    finding = redis_unreachable(config, RedisError(config.address, kind, "the library's reason"))
    assert (finding.check, finding.subject) == ("redis-ping", "cache.internal:6380/0")
    assert finding.severity is Severity.CRITICAL
    assert finding.message.startswith(words) and finding.message.endswith("(the library's reason)")
    assert finding.hint


def test_each_cause_reads_differently():
    messages = {redis_unreachable(CONFIG, RedisError(CONFIG.address, kind)).message for kind in UNREACHABLE}
    assert len(messages) == len(UNREACHABLE)


def test_unreachable_quotes_the_library_only_where_it_adds_something():
    refused = redis_unreachable(CONFIG, RedisError(CONFIG.address, "refused", "Connection refused"))
    assert refused.message == "connection refused: nothing listens there"
    tls = redis_unreachable(CONFIG, RedisError(CONFIG.address, "tls", "certificate has expired"))
    assert tls.message == "TLS handshake failed (certificate has expired)"
    assert "openssl s_client -connect cache.internal:6380" in tls.hint


@pytest.mark.parametrize("config, words", [
    (RedisConfig(host="h", port=7000), "`redis-cli -h h -p 7000 PING`"),
    (RedisConfig(url="rediss://u@h:7001/3", ca_file="/etc/ca.pem", password_env=PASSWORD_ENV),
     "`redis-cli -h h -p 7001 --tls --cacert /etc/ca.pem --user u --askpass PING`"),
    (RedisConfig(host="h", tls=True, password_env=PASSWORD_ENV), "`redis-cli -h h -p 6379 --tls --askpass PING`"),
])
def test_redis_cli_in_hints_reaches_the_server_without_the_password(config, words):
    assert redis_cli(config, "PING") == words


def test_endpoint_from_url_or_host_and_port():
    assert redis_endpoint(RedisConfig(url="rediss://u@h:7001/3")) == ("h", 7001, 3, True, "u")
    assert redis_endpoint(RedisConfig(url="redis://h", tls=True, username="me")) == ("h", 6379, 0, True, "me")
    assert redis_endpoint(RedisConfig(host="h", port=7000, db=2)) == ("h", 7000, 2, False, None)


def test_counters_round_trip_and_unreadable_ones_are_a_first_run():
    counters = _sample().counters(NOW)
    assert RedisCounters.from_dict(counters.to_dict()) == counters
    assert counters == RedisCounters(NOW, "a" * 40, 3 * 86400, 500, 7)
    for stored in (None, {}, {"sampled_at": "yesterday"}, [1, 2], {**counters.to_dict(), "evicted_keys": "many"}):
        assert RedisCounters.from_dict(stored) is None


def test_sample_from_info_as_redis_py_parses_it():
    info = {"redis_version": "6.2.14", "run_id": "r", "uptime_in_seconds": 60, "used_memory": 1000,
            "maxmemory": 0, "maxmemory_policy": "noeviction", "evicted_keys": 0, "rejected_connections": 0,
            "connected_clients": 3, "rdb_last_bgsave_status": "ok", "rdb_last_save_time": 1772434800,
            "rdb_changes_since_last_save": 0, "aof_enabled": 0, "role": "slave", "master_host": "p",
            "master_port": 6379, "master_link_status": "down", "master_link_down_since_seconds": 30}
    sample = RedisSample.from_info(info, timedelta(milliseconds=2), maxclients=128)
    assert sample.maxclients == 128  # Redis 6: not in INFO, from CONFIG GET
    assert sample.rdb_last_save_time == datetime(2026, 3, 2, 7, 0, tzinfo=timezone.utc)
    assert sample.is_replica and sample.master_link_down_since_seconds == 30
    assert RedisSample.from_info({**info, "maxclients": 10000}, timedelta(0), maxclients=128).maxclients == 10000


# --- systems: real redis-server processes --------------------------------------------------------

class RedisServer:
    """One redis-server on a free loopback port, with its own directory and log."""

    def __init__(self, directory: Path, *options: str, tls: trustme.LeafCert | None = None,
                 ca: trustme.CA | None = None):
        self.directory, self.port = directory, free_port()
        directory.mkdir(parents=True)
        self.data_dir = directory / "data"
        self.data_dir.mkdir()
        self.log = directory / "redis.log"
        ports = ["--port", str(self.port)]
        if tls is not None:
            tls.private_key_pem.write_to_path(directory / "key.pem")
            tls.cert_chain_pems[0].write_to_path(directory / "cert.pem")
            ca.cert_pem.write_to_path(directory / "ca.pem")
            ports = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(directory / "cert.pem"),
                     "--tls-key-file", str(directory / "key.pem"), "--tls-ca-cert-file", str(directory / "ca.pem"),
                     "--tls-auth-clients", "no"]
        self.process = subprocess.Popen(
            ["redis-server", *ports, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no",
             "--dir", str(self.data_dir), "--logfile", str(self.log), *options],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        # Ready once the log says so: loading is over and every listener is bound, TLS or not.
        wait_for(self._is_ready, timeout=30, what=lambda: f"redis-server on port {self.port}:\n{self._tail()}")

    def _tail(self) -> str:
        return self.log.read_text()[-2000:] if self.log.exists() else "(no log)"

    def _is_ready(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"redis-server exited with {self.process.returncode}:\n{self._tail()}", pytrace=False)
        return self.log.exists() and "Ready to accept connections" in self.log.read_text()

    def config(self, **kw) -> RedisConfig:
        return RedisConfig(**{"host": "127.0.0.1", "port": self.port, "timeout": "2s", **kw})

    def admin(self, password: str | None = None):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=password, socket_timeout=10,
                           decode_responses=True)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)  # a test may have stopped it
            self.process.terminate()
            self.process.wait(30)


@system_fixture
def redis_servers(tmp_path):
    """Starts redis-server processes for the test: `redis_servers(*options)`; ends them after it."""
    started: list[RedisServer] = []

    def start(*options: str, **kw) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(started)}", *options, **kw)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _unreachable(config: RedisConfig) -> tuple[RedisError, str]:
    with pytest.raises(RedisError) as caught:
        sample_redis(config)
    finding = redis_unreachable(config, caught.value)
    assert (finding.check, finding.severity) == ("redis-ping", Severity.CRITICAL)
    assert caught.value.__cause__ is not None  # the library's exception chained for the log
    return caught.value, f"{finding.message}\n{finding.hint}"


@pytest.mark.parametrize("protocol", [2, 3])
def test_a_healthy_server_is_ok_on_every_check(redis_servers, protocol):
    server = redis_servers()
    config = server.config(protocol=protocol)
    sample = sample_redis(config)
    assert sample.redis_version.startswith("7.") and sample.maxclients == 10000 and sample.role == "master"
    assert timedelta(0) < sample.ping_latency < timedelta(seconds=1)
    findings = assess_redis(config, sample, None, NOW)
    assert [f.check for f in findings] == CHECKS
    assert [f.severity for f in findings] == [Severity.OK] * 6, findings
    assert {f.subject for f in findings} == {f"127.0.0.1:{server.port}/0"}
    assert "no maxmemory limit" in findings[1].message


@pytest.mark.parametrize("protocol", [2, 3])
def test_requirepass_right_wrong_and_missing_password(redis_servers, monkeypatch, protocol):
    server = redis_servers("--requirepass", PASSWORD)
    config = server.config(password_env=PASSWORD_ENV, protocol=protocol)

    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    assert all(f.severity is Severity.OK for f in assess_redis(config, sample_redis(config), None, NOW))

    monkeypatch.setenv(PASSWORD_ENV, "not-the-" + PASSWORD)
    error, text = _unreachable(config)
    assert error.kind == "wrong-password" and text.startswith("authentication failed: wrong password")
    assert PASSWORD not in text and PASSWORD not in str(error) and f"${PASSWORD_ENV}" in text

    error, text = _unreachable(server.config(protocol=protocol))
    assert error.kind == "no-password" and "authentication required" in text


def test_a_password_for_a_server_without_one(redis_servers, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    # RESP3's HELLO accepts any password for a user without one; RESP2's AUTH refuses it.
    error, text = _unreachable(redis_servers().config(password_env=PASSWORD_ENV, protocol=2))
    assert error.kind == "password-not-set" and PASSWORD not in text


def test_a_monitoring_user_needs_only_ping_and_info(redis_servers, monkeypatch):
    server = redis_servers()
    admin = server.admin()
    admin.acl_setuser("monitor", enabled=True, passwords=[f"+{PASSWORD}"], commands=["+ping", "+info"])
    admin.acl_setuser("pinger", enabled=True, passwords=[f"+{PASSWORD}"], commands=["+ping"])
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    assert sample_redis(server.config(username="monitor", password_env=PASSWORD_ENV)).maxclients == 10000
    error, text = _unreachable(server.config(username="pinger", password_env=PASSWORD_ENV))
    assert error.kind == "no-permission" and "no permissions to run the 'info' command" in text
    assert "ACL SETUSER pinger" in text


def test_refused_on_a_closed_port():
    closed = RedisConfig(host="127.0.0.1", port=free_port(), timeout="2s")
    error, text = _unreachable(closed)
    assert error.kind == "refused" and text.startswith("connection refused")
    assert f"127.0.0.1:{closed.port}/0" in str(error)


def test_timeout_on_a_stopped_server(redis_servers):
    server = redis_servers()
    # Stopped, the kernel still completes the TCP handshake: the client waits for an answer.
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        error, text = _unreachable(server.config(timeout="300ms"))
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    assert error.kind == "timeout" and text.startswith("no answer within 300ms")


def _write_until_keys_are_evicted(server) -> int:
    """Writes 10 kB keys until the server (at its maxmemory) evicts some; its evicted_keys then."""
    admin, written = server.admin(), iter(range(10**6))

    def evicted() -> int:
        with admin.pipeline(transaction=False) as pipe:
            for _ in range(50):
                pipe.set(f"key:{next(written)}", "x" * 10_000)
            pipe.execute()
        return admin.info("stats")["evicted_keys"]

    return wait_for(evicted, what="keys to be evicted at maxmemory")


def test_evictions_at_maxmemory_are_new_since_the_previous_sample(redis_servers):
    server = redis_servers("--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru")
    config = server.config()
    before = sample_redis(config)
    assert before.evicted_keys == 0 and before.maxmemory == 2 * MiB
    _write_until_keys_are_evicted(server)
    after = sample_redis(config)
    findings = {f.check: f for f in assess_redis(config, after, before.counters(PREVIOUS_RUN), NOW)}
    assert findings["redis-evictions"].severity is Severity.WARNING
    assert (f"{after.evicted_keys} keys evicted since the last check (at 2026-03-01 07:00:00Z), policy allkeys-lru"
            in findings["redis-evictions"].message)
    assert findings["redis-memory"].severity is not Severity.OK
    assert "of maxmemory 2.0 MiB" in findings["redis-memory"].message
    # The next run compares against this one: nothing new since.
    again = assess_evictions(config, after, after.counters(NOW))
    assert again.severity is Severity.OK and again.message.startswith("0 keys evicted")


def test_memory_share_warning(redis_servers):
    server = redis_servers("--maxmemory", "1gb")
    admin = server.admin()
    admin.set("big", "x" * (8 * MiB))  # enough data that a client connection's buffers barely move the share
    admin.config_set("maxmemory", int(admin.info("memory")["used_memory"] / 0.87))
    config = server.config()
    finding = assess_memory(config, sample_redis(config))
    assert finding.severity is Severity.WARNING and "memory_warning is 80%" in finding.message, finding.message


def _redis_command(sock: socket.socket, command: bytes) -> bytes:
    sock.sendall(command)
    return sock.recv(65536)


def test_clients_near_maxclients_and_rejected_connections(redis_servers):
    server = redis_servers("--maxclients", "4")
    config = server.config()
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
    try:
        assert all(_redis_command(s, b"PING\r\n") == b"+PONG\r\n" for s in held)  # each one registered
        before = sample_redis(config)  # the fourth client
        assert (before.connected_clients, before.maxclients) == (4, 4)
        full = assess_clients(config, before, None)
        assert full.severity is Severity.WARNING and "4 clients connected of maxclients 4 (100%)" in full.message

        fourth = socket.create_connection(("127.0.0.1", server.port))
        assert _redis_command(fourth, b"PING\r\n") == b"+PONG\r\n"
        with socket.create_connection(("127.0.0.1", server.port)) as fifth:
            assert b"max number of clients reached" in fifth.recv(65536)
        fourth.close()
        wait_for(lambda: b"connected_clients:3\r\n" in _redis_command(held[0], b"INFO clients\r\n"),
                 what="the server to notice the closed connections")
        after = sample_redis(config)
        finding = assess_clients(config, after, before.counters(PREVIOUS_RUN))
        assert finding.severity is Severity.WARNING
        assert ("1 connection rejected since the last check (at 2026-03-01 07:00:00Z): maxclients was reached"
                in finding.message), finding.message
    finally:
        for s in held:
            s.close()


def test_replica_of_a_primary_that_is_gone(redis_servers):
    dead = free_port()
    replica = redis_servers("--replicaof", "127.0.0.1", str(dead))
    config = replica.config()
    finding = assess_replication(config, sample_redis(config))
    assert finding.severity is Severity.CRITICAL, finding.message
    assert f"replica of 127.0.0.1:{dead}: the link to the primary is down and has not been up" in finding.message
    assert f"redis-cli -h 127.0.0.1 -p {dead} PING" in finding.hint


def test_replica_whose_link_goes_down(redis_servers):
    # Redis 7 waits 5 s by default for more replicas before a diskless full sync; one is all there is.
    primary = redis_servers("--repl-diskless-sync-delay", "0")
    replica = redis_servers("--replicaof", "127.0.0.1", str(primary.port))
    wait_for(lambda: replica.admin().info("replication")["master_link_status"] == "up", what="the link to come up")
    assert assess_replication(replica.config(), sample_redis(replica.config())).message == (
        f"replica of 127.0.0.1:{primary.port}, link up")
    wait_for(lambda: primary.admin().info("replication")["connected_slaves"] == 1, what="the primary to count it")
    assert assess_replication(primary.config(), sample_redis(primary.config())).message == (
        "primary with 1 connected replica")
    primary.stop()
    wait_for(lambda: replica.admin().info("replication")["master_link_status"] == "down", what="the link to go down")
    finding = assess_replication(replica.config(), sample_redis(replica.config()))
    assert finding.severity is Severity.CRITICAL and "the link to the primary is down for " in finding.message


def test_a_failed_background_save_is_critical(redis_servers):
    server = redis_servers()
    # The server's working directory removed under it: the save cannot create its temporary file,
    # even as root (an unwritable directory would not stop root).
    shutil.rmtree(server.data_dir)
    admin = server.admin()
    admin.bgsave()
    wait_for(lambda: (info := admin.info("persistence"))["rdb_bgsave_in_progress"] == 0
             and info["rdb_last_bgsave_status"] == "err", what="the background save to fail")
    finding = assess_persistence(server.config(), sample_redis(server.config()), NOW)
    assert finding.severity is Severity.CRITICAL
    assert "the last background save (BGSAVE) failed: rdb_last_bgsave_status err" in finding.message


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@system_fixture
def tls_redis(redis_servers, ca):
    return redis_servers(tls=ca.issue_cert("127.0.0.1", "localhost"), ca=ca)


@pytest.mark.parametrize("protocol", [2, 3])
def test_tls_with_the_right_ca(tls_redis, ca, tmp_path, protocol):
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    config = tls_redis.config(tls=True, ca_file=str(tmp_path / "ca.pem"), protocol=protocol)
    assert all(f.severity is Severity.OK for f in assess_redis(config, sample_redis(config), None, NOW))
    by_url = RedisConfig(url=f"rediss://127.0.0.1:{tls_redis.port}/0", ca_file=str(tmp_path / "ca.pem"))
    assert sample_redis(by_url).role == "master"


def test_tls_with_another_ca_fails_verification(tls_redis, tmp_path):
    trustme.CA().cert_pem.write_to_path(tmp_path / "other-ca.pem")
    error, text = _unreachable(tls_redis.config(tls=True, ca_file=str(tmp_path / "other-ca.pem")))
    assert error.kind == "tls" and text.startswith("TLS handshake failed (certificate verify failed: "), text


def test_tls_mismatches(tls_redis, redis_servers, tmp_path):
    error, text = _unreachable(tls_redis.config())
    assert error.kind == "not-tls" and "does it expect TLS?" in text and "set tls = true" in text

    error, text = _unreachable(tls_redis.config(tls=True, ca_file=str(tmp_path / "missing.pem")))
    assert error.kind == "tls" and f"cannot read ca_file {tmp_path / 'missing.pem'}" in text

    # TLS to a plain port: the server waits for a command while the client waits for a handshake.
    error, text = _unreachable(redis_servers().config(tls=True, timeout="300ms"))
    assert error.kind == "tls" and "handshake operation timed out" in text, text


def test_counters_kept_between_runs_in_prefect_variables(prefect_harness):
    from maint.tasks.state import load_redis_counters, save_redis_counters

    counters = _sample().counters(NOW)
    assert load_redis_counters("10.0.0.1:6379/0") is None
    save_redis_counters("10.0.0.1:6379/0", counters.to_dict())
    save_redis_counters("10.0.0.16:379/0", replace(counters, evicted_keys=1).to_dict())
    assert RedisCounters.from_dict(load_redis_counters("10.0.0.1:6379/0")) == counters
    assert RedisCounters.from_dict(load_redis_counters("10.0.0.16:379/0")).evicted_keys == 1


# --- through the health-check flow, as `maint run health-check` runs it --------------------------

def test_health_check_pages_a_refused_password_and_the_next_good_run_resolves_it(prefect_harness, redis_servers,
                                                                               tmp_path, capsys, monkeypatch,
                                                                               receivers):
    from tests.conftest import run_json
    from tests.test_notify import _bodies

    httpserver, _slack, notify = receivers
    server = redis_servers("--requirepass", PASSWORD)
    config = tmp_path / "maint.toml"
    config.write_text(f"""
[notify]
page_on = ["critical"]
{notify}

[health_check]

[[health_check.redis]]
url = "redis://127.0.0.1:{server.port}/0"
password_env = "{PASSWORD_ENV}"
""")
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
    code, report = run_json(capsys, config, "health-check")
    ping = {f["check"]: f for f in report["findings"]}["redis-ping"]
    assert code == 2 and ping["severity"] == "critical" and ping["subject"] == f"127.0.0.1:{server.port}/0", ping
    assert "wrong password" in ping["message"], ping
    [trigger] = [e for e in _bodies(httpserver, "/v2/enqueue") if e["event_action"] == "trigger"]
    assert "not-the-password" not in str(report) and all(
        "not-the-password" not in r.get_data(as_text=True) for r, _ in httpserver.log)

    httpserver.clear_log()
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    code, report = run_json(capsys, config, "health-check")
    assert code == 0, [f for f in report["findings"] if f["severity"] != "ok"]
    assert [f["check"] for f in report["findings"]] == CHECKS
    assert [(e["event_action"], e["dedup_key"]) for e in _bodies(httpserver, "/v2/enqueue")] == [
        ("resolve", trigger["dedup_key"])]


def test_the_health_check_keeps_each_servers_counters_for_the_next_run(prefect_harness, redis_servers, tmp_path,
                                                                        capsys):
    """Through the flow: the first run has no previous counters; keys evicted after it are the
    second run's news; a third run with nothing new says 0 since the last check."""
    from tests.conftest import run_json

    server = redis_servers("--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru")
    config = tmp_path / "maint.toml"
    config.write_text(f'[health_check]\n\n[[health_check.redis]]\nurl = "redis://127.0.0.1:{server.port}/0"\n')

    def evictions() -> dict:
        _code, report = run_json(capsys, config, "health-check")
        return {f["check"]: f for f in report["findings"]}["redis-evictions"]

    first = evictions()
    assert first["severity"] == "ok" and "no previous" in first["message"], first
    count = _write_until_keys_are_evicted(server)
    second = evictions()
    assert second["severity"] == "warning" and f"{count} keys evicted since the last check" in second["message"], second
    third = evictions()
    assert third["severity"] == "ok" and third["message"].startswith("0 keys evicted since the last check"), third
