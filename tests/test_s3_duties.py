"""Every duty that uses a backup store, end to end on an S3 store (moto's server, the real boto3):
backup, restore-test, backup-retention (plan, then apply) and dr-drill; backup-verification of a
good backup, and of the same backup rotted at rest: a critical checksum finding."""

from __future__ import annotations

import base64

import google_crc32c

from maint.backups import Manifest
from tests.conftest import rot_s3_object, run_cli, run_json, write_config
from tests.test_restore import PREFIX, _scratch_databases


def _s3_config(tmp_path, pg, bucket):
    return write_config(tmp_path / "maint.toml", pg, f"s3://{bucket.name}/db/", more_stores=f"""
endpoint_url = "{bucket.endpoint_url}"
region = "{bucket.region}"
""", extra=f"""
[restore_test]
store = "prod-dumps"
server = "prod"
scratch_prefix = "{PREFIX}"
jobs = 2
leftover_age = "0s"

[retention]
store = "prod-dumps"
keep_last = 2
keep_daily = 0
keep_weekly = 0
keep_monthly = 0
min_keep = 2

[dr_drill]
store = "prod-dumps"
server = "prod"
""")


def _keys(bucket) -> list[str]:
    return sorted(o["Key"] for o in bucket.client.list_objects_v2(Bucket=bucket.name).get("Contents", []))


def _checks(report: dict) -> dict[str, dict]:
    return {f["check"]: f for f in report["findings"]}


def test_every_store_duty_runs_on_s3(pg, db_password, prefect_harness, tmp_path, capsys, s3_bucket):
    config = _s3_config(tmp_path, pg, s3_bucket)

    for _ in range(3):
        code, report = run_json(capsys, config, "backup")
        assert code == 0, report
    dumps = [k for k in _keys(s3_bucket) if k.endswith(".dump")]
    assert len(dumps) == 3 and _keys(s3_bucket) == sorted(dumps + [d + ".manifest.json" for d in dumps])
    newest = dumps[-1]
    assert report["details"]["dump"] == f"s3://{s3_bucket.name}/{newest}"
    data = s3_bucket.client.get_object(Bucket=s3_bucket.name, Key=newest)["Body"].read()
    head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=newest, ChecksumMode="ENABLED")
    manifest = Manifest.from_json(s3_bucket.client.get_object(
        Bucket=s3_bucket.name, Key=newest + ".manifest.json")["Body"].read())
    assert manifest.size_bytes == len(data) and head["ChecksumType"] == "FULL_OBJECT"
    assert manifest.crc32c == head["ChecksumCRC32C"] == base64.b64encode(google_crc32c.Checksum(data).digest()).decode()

    code, report = run_json(capsys, config, "restore-test")
    assert code == 0, report["findings"]
    assert _scratch_databases(pg) == []

    code, report = run_json(capsys, config, "backup-retention")
    assert code == 0 and "dry run: 3 backups: keep 2, delete 1" in report["findings"][0]["message"], report
    assert len(_keys(s3_bucket)) == 6, "a dry run deletes nothing"
    code, out, err = run_cli(capsys, "--config", str(config), "run", "backup-retention", "--apply")
    assert code == 0 and "deleted 1, skipped 0" in out, out + err
    assert _keys(s3_bucket) == sorted(dumps[1:] + [d + ".manifest.json" for d in dumps[1:]]), "and the lock is gone"
    versions = s3_bucket.client.list_object_versions(Bucket=s3_bucket.name, Prefix=dumps[0])
    assert versions.get("Versions", []) == versions.get("DeleteMarkers", []) == [], \
        "deleted for good: no delete marker, no noncurrent version"

    code, report = run_json(capsys, config, "dr-drill")
    assert code == 0, report["findings"]
    assert _scratch_databases(pg) == []


def test_verification_passes_and_then_catches_rot_at_rest_as_a_checksum_finding(pg, db_password, prefect_harness,
                                                                                 tmp_path, capsys, s3_bucket):
    config = _s3_config(tmp_path, pg, s3_bucket)
    code, report = run_json(capsys, config, "backup")
    assert code == 0, report
    [dump] = [k for k in _keys(s3_bucket) if k.endswith(".dump")]

    code, report = run_json(capsys, config, "backup-verification")
    assert code == 0, report["findings"]
    checks = _checks(report)
    assert checks["checksum"]["severity"] == "ok" and checks["archive"]["severity"] == "ok"
    assert "crc32c from the object's metadata" in checks["checksum"]["message"], "S3's own CRC32C was compared"
    assert f"s3://{s3_bucket.name}/{dump}" in checks["archive"]["message"]

    data = bytearray(s3_bucket.client.get_object(Bucket=s3_bucket.name, Key=dump)["Body"].read())
    data[len(data) // 2] ^= 0x01
    rot_s3_object(s3_bucket.name, dump, bytes(data))

    code, report = run_json(capsys, config, "backup-verification")

    assert code == 2
    checksum = _checks(report)["checksum"]
    assert checksum["severity"] == "critical" and checksum["subject"] == f"s3://{s3_bucket.name}/db/"
    assert f"s3://{s3_bucket.name}/{dump}" in checksum["message"] and "the object is corrupt" in checksum["message"]
