"""The demo's S3 part: moto's S3 server on loopback, a versioned bucket in it, and the newest
backup copied there through maint's own S3 store (the multipart upload with a full-object CRC32C
that `maint run backup` does on S3), for `maint run backup-verification --store demo-offsite`.

moto is a test dependency (`make demo` and `make test` install it); without it the demo says how
to see this part and goes on without it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator

from maint.tasks.environment import free_port, load_config
from maint.tasks.storage import open_store

OFFSITE_STORE = "demo-offsite"
BUCKET = "maint-demo-offsite"
KEY_ID_ENV, SECRET_ENV = "MAINT_DEMO_S3_KEY_ID", "MAINT_DEMO_S3_SECRET"
HOW_TO_SEE_IT = ("the S3 store is not shown: moto is not installed here; "
                 ".venv/bin/pip install 'moto[server,s3crc32c]' (or `make test`, which installs it) and run the demo again")


@contextlib.contextmanager
def s3_on_loopback() -> Iterator[str | None]:
    """moto's S3 with a versioned bucket `BUCKET`, its endpoint URL; None when moto is missing."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        yield None
        return
    import boto3

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        # moto takes any credentials; these reach maint through the store's *_env keys, as real ones would.
        os.environ[KEY_ID_ENV], os.environ[SECRET_ENV] = "demo-key-id", "demo-secret"
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=os.environ[KEY_ID_ENV], aws_secret_access_key=os.environ[SECRET_ENV])
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield endpoint
    finally:
        server.stop()


def offsite_store_config(endpoint: str | None) -> str:
    """The [[backup_stores]] entry of the S3 store, for the demo's configuration ('' without moto)."""
    if endpoint is None:
        return ""
    return f"""
[[backup_stores]]
name = "{OFFSITE_STORE}"             # moto's S3 on loopback: the demo copies its newest backup here
url = "s3://{BUCKET}/db/"
database = "demo"
rpo = "26h"
endpoint_url = "{endpoint}"
region = "us-east-1"
access_key_id_env = "{KEY_ID_ENV}"
secret_access_key_env = "{SECRET_ENV}"
"""


def copy_newest_backup_offsite(config_file: Path, source: str) -> str:
    """The newest dump of store `source` and its manifest, copied into the S3 store as an offsite
    copy job would: streamed, dump first, manifest last. Returns the dump's s3:// URL."""
    from maint.backups import manifest_name

    config = load_config(config_file)
    local, offsite = open_store(config.store(source)), open_store(config.store(OFFSITE_STORE))
    dump = max(o.name for o in local.list_objects() if o.name.endswith(".dump"))
    writer = offsite.open_writer(dump)
    try:
        for chunk in local.open_reader(dump):
            writer.write(chunk)
        stored = writer.commit()
    except BaseException:
        writer.abort()
        raise
    offsite.put_bytes(manifest_name(dump), local.read_bytes(manifest_name(dump)))
    return stored.url
