"""drtool serve: /health and /metrics over real HTTP against a real store, cached answers, nothing
else served, loopback unless told otherwise, and a systemd unit for it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from helpers import make_setup
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration


@pytest.fixture
def setup(pg, tmp_path):
    return make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"')


@pytest.fixture
def serve(setup):
    """Start `drtool serve` on a free loopback port; returns its base URL. Stopped by PID."""
    procs = []

    def start(*extra: str) -> str:
        env = {**os.environ, **{k: v for k, v in setup.env.items() if v is not None}}
        env = {k: v for k, v in env.items() if k not in ("PGPASSWORD", "PGPASSFILE", "DRTOOL_POLICY")}
        p = subprocess.Popen([sys.executable, "-m", "drtool", "serve", "-p", str(setup.policy), "--listen",
                              "127.0.0.1:0", *extra], env=env, stderr=subprocess.PIPE, text=True)  # fmt: skip
        procs.append(p)
        line = p.stderr.readline()
        assert "serving GET /health" in line, line + p.stderr.read()
        return line.split("http://", 1)[1].split("/", 1)[0]

    yield lambda *extra: "http://" + start(*extra)
    for p in procs:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0
        p.stderr.close()


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_health_is_503_with_the_status_json_while_there_is_no_backup(setup, serve):
    code, ctype, body = get(serve() + "/health")
    assert code == 503 and ctype == "application/json"
    doc = json.loads(body)
    assert doc["status"] == "unhealthy" and setup.policy.read_text().split('"')[1] in doc["policies"]


def test_health_is_200_when_healthy(setup, serve):
    assert setup.cli("backup", "-p", str(setup.policy)).code == 0
    status = setup.cli("status", "-p", str(setup.policy), "--json")
    code, _, body = get(serve() + "/health")
    assert json.loads(body)["status"] == status.json["status"]
    assert code == (200 if status.json["status"] == "healthy" else 503)
    assert setup.pg.PASSWORD not in body


def test_metrics_expose_the_gauges_and_the_servers_own_requests(setup, serve):
    assert setup.cli("backup", "-p", str(setup.policy)).code == 0
    base = serve()
    get(base + "/health")
    get(base + "/nope")
    code, ctype, body = get(base + "/metrics")
    assert code == 200 and ctype.startswith("text/plain; version=0.0.4")
    f = families(body)
    assert f["drtool_last_backup_timestamp_seconds"].samples[0].value > 0
    requests = {(s.labels["path"], s.labels["code"]): s.value for s in f["drtool_serve_requests"].samples
                if s.name == "drtool_serve_requests_total"}  # fmt: skip
    assert requests[("/health", "503")] + requests.get(("/health", "200"), 0) == 1 and requests[("other", "404")] == 1
    assert any(s.name.endswith("_bucket") for s in f["drtool_serve_request_duration_seconds"].samples)
    promtool = shutil.which("promtool")
    if promtool:
        checked = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_answers_are_cached_for_the_interval(setup, serve):
    """A backup taken meanwhile shows only once the cached answer expires (here: never, or at once)."""
    assert setup.cli("backup", "-p", str(setup.policy)).code == 0
    cached, fresh = serve("--cache", "1h"), serve("--cache", "0s")

    def newest(base: str) -> float:
        return families(get(base + "/metrics")[2])["drtool_last_backup_timestamp_seconds"].samples[0].value

    before_cached, before_fresh = newest(cached), newest(fresh)
    assert setup.cli("backup", "-p", str(setup.policy)).code == 0
    assert newest(cached) == before_cached
    assert newest(fresh) > before_fresh


def test_only_get_of_health_and_metrics_is_served(serve):
    base = serve()
    assert get(base + "/secrets")[0] == 404
    req = urllib.request.Request(base + "/health", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 501


def test_non_loopback_listen_needs_allow_remote(setup):
    r = setup.cli("serve", "-p", str(setup.policy), "--listen", "0.0.0.0:9187")
    assert r.code == 2 and "--allow-remote" in r.err and "Traceback" not in r.err


def test_schedule_serve_makes_a_service_systemd_accepts(setup, tmp_path):
    out = tmp_path / "units"
    r = setup.cli("schedule", "-p", str(setup.policy), "--format", "systemd", "--serve", "--install", str(out))
    assert r.code == 0, r.err
    service = (out / "drtool-serve.service").read_text()
    assert f"serve --policy {setup.policy} --listen 127.0.0.1:9187" in service and "EnvironmentFile=-" in service
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is not installed (Debian package systemd)")
    v = subprocess.run([analyze, "verify", str(out / "drtool-serve.service")], capture_output=True, text=True)
    assert v.returncode == 0, v.stderr
