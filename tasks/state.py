"""What maint remembers between runs, in Prefect Variables on the Prefect server: pages still
open per duty (and per target, for runs limited to one target), and the newest backup per store
that passed verification."""

from __future__ import annotations

import hashlib
import itertools
import json
import re


def _variable(*parts: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", "maint_" + "_".join(parts).lower())


def _overwrite(name: str, value) -> None:
    """Set the Variable, creating it the first time: one PATCH when it exists (Variable.set makes a
    read, the PATCH and a read back, three requests on a server that may be busy writing the
    run's task states)."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import VariableCreate, VariableUpdate

    with get_client(sync_client=True) as client:
        try:
            client.update_variable(VariableUpdate(name=name, value=value))
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 404:
                raise
            client.create_variable(VariableCreate(name=name, value=value))


# Prefect refuses a Variable whose JSON value is over 5,000 characters: about 100 dedup keys. A
# large incident (150 crash-looping pods) must not lose its open pages, or they would never be
# resolved, so the list is spread over Variables `maint_open_pages_<duty>`, `..._1`, `..._2`...
SHARD_CHARS = 4500
# A shard is closed only when the next key does not fit, so one with room for any key (PagerDuty
# caps a dedup_key at 255 characters) is the last: loading reads no Variable beyond it.
_KEY_ROOM = 260


def _json_length(keys: list[str]) -> int:
    return len(json.dumps(keys))


def _is_last_shard(shard: list[str]) -> bool:
    return _json_length(shard) <= SHARD_CHARS - _KEY_ROOM


def pack_open_pages(keys: list[str]) -> list[list[str]]:
    """The keys in order, in shards of at most SHARD_CHARS characters of JSON; the last shard
    always has room for another key (an empty one is added when the last is full)."""
    shards: list[list[str]] = [[]]
    for key in keys:
        if shards[-1] and _json_length([*shards[-1], key]) > SHARD_CHARS:
            shards.append([])
        shards[-1].append(key)
    if not _is_last_shard(shards[-1]):
        shards.append([])
    return shards


def _open_pages_variable(duty: str, index: int, scope: str | None = None) -> str:
    """`maint_open_pages_<duty>`, or for one target `maint_open_pages_<duty>_for_<target>_<hash>`:
    the hash keeps targets apart that spell the same once lowercased and reduced to [a-z0-9_]
    ("Prod" and "prod", "a-b" and "a.b"), and the name under Prefect's 255 characters. Shard 0 keeps
    the name a single Variable always had."""
    parts = ["open_pages", duty]
    if scope is not None:
        parts += ["for", scope[:80], hashlib.sha256(scope.encode()).hexdigest()[:8]]
    return _variable(*parts) if index == 0 else _variable(*parts, str(index))


def load_open_pages(duty: str, scope: str | None = None) -> list[str]:
    """The open pages of `duty`'s list, or of its list for one target (`scope`)."""
    from prefect.variables import Variable

    keys: list[str] = []
    for index in itertools.count():
        value = Variable.get(_open_pages_variable(duty, index, scope), default=[])
        shard = [k for k in value if isinstance(k, str)] if isinstance(value, list) else []
        keys.extend(shard)
        if _is_last_shard(shard):
            return keys


def save_open_pages(duty: str, keys: list[str], scope: str | None = None) -> None:
    """Shards past the new last one may be left from a larger list; loading never reads them."""
    for index, shard in enumerate(pack_open_pages(keys)):
        _overwrite(_open_pages_variable(duty, index, scope), shard)


def record_verified(store: str, backup_name: str) -> None:
    # Written only when it changes: a write to the temporary (SQLite) Prefect server can meet
    # "database is locked" and cost the run a 2 s client back-off for nothing.
    if last_verified(store) != backup_name:
        _overwrite(_variable("verified", store), backup_name)


def last_verified(store: str) -> str | None:
    from prefect.variables import Variable

    value = Variable.get(_variable("verified", store), default=None)
    return value if isinstance(value, str) else None


def _redis_counters_variable(address: str) -> str:
    """`maint_redis_counters_<address>_<hash>`: the hash keeps apart addresses that read the same
    once reduced to [a-z0-9_] ("10.0.0.1:6379/0" and "10.0.0.16:379/0")."""
    return _variable("redis_counters", address[:80], hashlib.sha256(address.encode()).hexdigest()[:8])


def load_redis_counters(address: str) -> dict | None:
    """The counters the previous health check saw on this Redis server (`RedisConfig.address`),
    as `RedisCounters.to_dict` wrote them; None before the first run."""
    from prefect.variables import Variable

    value = Variable.get(_redis_counters_variable(address), default=None)
    return value if isinstance(value, dict) else None


def save_redis_counters(address: str, counters: dict) -> None:
    _overwrite(_redis_counters_variable(address), counters)


# The query review's snapshot of pg_stat_statements counters, one per database: the counters of
# its top queries (no text), spread like the open pages over `maint_query_review_<database>`,
# `..._part_1`, ... when a large `top` makes it more than one Variable holds. Shard 0, written
# last, names the database and how many shards there are; every shard carries the snapshot's
# time, so a save interrupted half way (or two names that reduce to the same Variable name)
# reads as no snapshot, and the next review starts over, never compares with a mixed one.

def _query_snapshot_variable(database: str, index: int) -> str:
    return _variable("query_review", database) if index == 0 else _variable("query_review", database, "part", str(index))


def pack_query_snapshot(database: str, snapshot: dict) -> list[dict]:
    """The snapshot as the values of its shards, each at most SHARD_CHARS characters of JSON."""
    header = {k: v for k, v in snapshot.items() if k != "queries"}
    shards: list[dict] = [{"database": database, **header, "shards": 1, "queries": []}]
    for row in snapshot.get("queries", []):
        grown = {**shards[-1], "queries": [*shards[-1]["queries"], row]}
        if shards[-1]["queries"] and len(json.dumps(grown)) > SHARD_CHARS:
            shards.append({"taken_at": header.get("taken_at"), "queries": []})
        shards[-1]["queries"].append(row)
    shards[0]["shards"] = len(shards)
    return shards


def unpack_query_snapshot(database: str, shards: list) -> dict | None:
    first = shards[0] if shards else None
    if not isinstance(first, dict) or first.get("database") != database:
        return None
    rows = []
    for shard in shards:
        if not isinstance(shard, dict) or shard.get("taken_at") != first.get("taken_at") \
                or not isinstance(shard.get("queries"), list):
            return None
        rows += shard["queries"]
    return {**{k: v for k, v in first.items() if k not in ("database", "shards")}, "queries": rows}


def load_query_snapshot(database: str) -> dict | None:
    """The previous query review's snapshot of `database` (a [[databases]] name), or None."""
    from prefect.variables import Variable

    first = Variable.get(_query_snapshot_variable(database, 0), default=None)
    if not isinstance(first, dict) or not isinstance(first.get("shards"), int) or first["shards"] < 1:
        return None
    shards = [first] + [Variable.get(_query_snapshot_variable(database, i), default=None)
                        for i in range(1, first["shards"])]
    return unpack_query_snapshot(database, shards)


def save_query_snapshot(database: str, snapshot: dict) -> None:
    shards = pack_query_snapshot(database, snapshot)
    for index in [*range(1, len(shards)), 0]:  # shard 0 last: it makes the new snapshot the one loaded
        _overwrite(_query_snapshot_variable(database, index), shards[index])
