"""Backup object names and the manifest: pure, no I/O."""

import json
from datetime import datetime, timedelta, timezone

import pytest

from maint.backups import Manifest, ManifestError, TableCount, backup_object_name, manifest_name

UTC = timezone.utc
TAIPEI = timezone(timedelta(hours=8))
NEW_YORK_WINTER = timezone(timedelta(hours=-5))


@pytest.mark.parametrize("database, started_at, expected", [
    ("prod", datetime(2026, 11, 25, 10, 15, 0, 123456, tzinfo=UTC), "prod-20261125T101500.123Z.dump"),
    ("prod", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "prod-20260102T030405.000Z.dump"),
    ("prod", datetime(2026, 11, 25, 18, 15, 0, 999999, tzinfo=TAIPEI), "prod-20261125T101500.999Z.dump"),
    ("prod", datetime(2026, 1, 1, 5, 0, 0, tzinfo=TAIPEI), "prod-20251231T210000.000Z.dump"),
    ("prod", datetime(2026, 12, 31, 20, 0, 0, tzinfo=NEW_YORK_WINTER), "prod-20270101T010000.000Z.dump"),
])
def test_backup_object_name_is_utc(database, started_at, expected):
    assert backup_object_name(database, started_at) == expected


@pytest.mark.parametrize("started_at", [
    datetime(2026, 1, 1, tzinfo=UTC),
    datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2026, 6, 15, 12, 30, 45, 500000, tzinfo=TAIPEI),
    datetime(2100, 2, 3, 4, 5, 6, 7000, tzinfo=UTC),
])
def test_backup_object_name_is_fixed_width(started_at):
    name = backup_object_name("prod", started_at)
    assert len(name) == len("prod-20261125T101500.123Z.dump")


@pytest.mark.parametrize("earlier, later", [
    (datetime(2026, 11, 25, 23, 59, 59, 999000, tzinfo=UTC), datetime(2026, 11, 26, 0, 0, 0, tzinfo=UTC)),
    (datetime(2026, 1, 31, 23, 0, tzinfo=UTC), datetime(2026, 2, 1, 1, 0, tzinfo=UTC)),
    (datetime(2026, 9, 30, 22, 0, tzinfo=UTC), datetime(2026, 10, 1, 0, 0, tzinfo=UTC)),
    (datetime(2026, 12, 31, 23, 59, tzinfo=UTC), datetime(2027, 1, 1, 0, 1, tzinfo=UTC)),
    (datetime(2026, 11, 25, 9, 0, 0, 1000, tzinfo=UTC), datetime(2026, 11, 25, 9, 0, 0, 2000, tzinfo=UTC)),
    (datetime(2026, 11, 25, 9, 0, 0, 999000, tzinfo=UTC), datetime(2026, 11, 25, 9, 0, 1, 0, tzinfo=UTC)),
    # later in wall-clock digits, but earlier in UTC
    (datetime(2026, 11, 26, 7, 0, tzinfo=TAIPEI), datetime(2026, 11, 26, 0, 0, tzinfo=UTC)),
], ids=["day", "month-31", "month-30", "year", "one-ms", "ms-to-second", "zones"])
def test_backup_object_names_sort_by_time(earlier, later):
    a, b = backup_object_name("prod", earlier), backup_object_name("prod", later)
    assert a != b
    assert sorted([b, a]) == [a, b]


def test_many_names_sort_by_time():
    start = datetime(2026, 12, 31, 23, 59, 59, 997000, tzinfo=UTC)
    moments = [start + timedelta(milliseconds=i) for i in range(6)] + \
              [start + timedelta(days=d) for d in (1, 9, 10, 40, 400)]
    names = [backup_object_name("prod", m) for m in moments]
    assert sorted(names) == names
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("database, prefix", [
    ("prod", "prod-"),
    ("prod_eu.2-a", "prod_eu.2-a-"),
    ("prod/eu west", "prod_eu_west-"),
    ("../../etc/passwd", ".._.._etc_passwd-"),
    ("naïve db", "na_ve_db-"),
    ("a:b*c?d", "a_b_c_d-"),
])
def test_unsafe_characters_are_replaced(database, prefix):
    name = backup_object_name(database, datetime(2026, 11, 25, tzinfo=UTC))
    assert name == prefix + "20261125T000000.000Z.dump"
    assert "/" not in name and " " not in name


def test_manifest_name():
    assert manifest_name("prod-20261125T101500.123Z.dump") == "prod-20261125T101500.123Z.dump.manifest.json"


def make_manifest(**overrides) -> Manifest:
    fields = dict(
        database="prod", dbname="app", host="10.0.0.5", port=5432,
        server_version="16.4", pg_dump_version="16.4",
        snapshot_time=datetime(2026, 11, 25, 1, 0, 1, 250000, tzinfo=UTC),
        started_at=datetime(2026, 11, 25, 1, 0, 0, tzinfo=UTC),
        finished_at=datetime(2026, 11, 25, 1, 3, 7, tzinfo=UTC),
        dump_name="prod-20261125T010000.000Z.dump", size_bytes=123_456_789,
        sha256="ab" * 32, crc32c="AAAAAA==",
        tables=[TableCount("public", "orders", 1200), TableCount("public", "customers", 34)],
        maint_version="0.1.0",
    )
    fields.update(overrides)
    return Manifest(**fields)


@pytest.mark.parametrize("manifest", [
    make_manifest(),
    make_manifest(tables=[]),
    make_manifest(snapshot_time=datetime(2026, 11, 25, 9, 0, 1, tzinfo=TAIPEI)),
], ids=["full", "no-tables", "non-utc"])
def test_manifest_round_trip(manifest):
    text = manifest.to_json()
    assert text.endswith("\n")
    back = Manifest.from_json(text)
    assert back == manifest
    assert back.snapshot_time.utcoffset() == manifest.snapshot_time.utcoffset()
    assert Manifest.from_json(text.encode()) == manifest


def test_manifest_totals_and_format():
    manifest = make_manifest()
    assert manifest.total_rows == 1234
    assert manifest.format == 1
    assert manifest.dump_format == "custom"


REQUIRED = ["database", "dbname", "host", "port", "server_version", "pg_dump_version", "snapshot_time",
            "started_at", "finished_at", "dump_name", "size_bytes", "sha256", "crc32c"]


@pytest.mark.parametrize("missing", REQUIRED)
def test_from_json_names_a_missing_field(missing):
    data = json.loads(make_manifest().to_json())
    del data[missing]
    with pytest.raises(ManifestError) as caught:
        Manifest.from_json(json.dumps(data))
    message = str(caught.value)
    # The timestamps say "missing field X"; the others come through the dataclass constructor as
    # "malformed field: ... missing 1 required positional argument: 'X'". Either names the field.
    assert "missing" in message
    assert repr(missing) in message or message == f"missing field {missing}"


@pytest.mark.parametrize("missing", ["snapshot_time", "started_at", "finished_at"])
def test_from_json_missing_timestamp_message(missing):
    data = json.loads(make_manifest().to_json())
    del data[missing]
    with pytest.raises(ManifestError) as caught:
        Manifest.from_json(json.dumps(data))
    assert str(caught.value) == f"missing field {missing}"


@pytest.mark.parametrize("text, message", [
    ("{", "not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
    ("", "not valid JSON: Expecting value: line 1 column 1 (char 0)"),
    (b"\xff\xfe\xfa", None),
    ("[1, 2]", "not a JSON object"),
    ('"manifest"', "not a JSON object"),
])
def test_from_json_rejects_invalid_json(text, message):
    with pytest.raises(ManifestError) as caught:
        Manifest.from_json(text)
    if message is None:
        assert str(caught.value).startswith("not valid JSON: ")
    else:
        assert str(caught.value) == message


def test_from_json_malformed_timestamp():
    data = json.loads(make_manifest().to_json())
    data["started_at"] = "yesterday"
    with pytest.raises(ManifestError) as caught:
        Manifest.from_json(json.dumps(data))
    assert str(caught.value).startswith("malformed field: ")
    assert "yesterday" in str(caught.value)
