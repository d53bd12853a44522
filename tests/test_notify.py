"""Notifications (a webhook and a heartbeat, against a real local HTTP server) and JSON logs."""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest
from helpers import make_setup
from services import free_port

pytestmark = pytest.mark.integration

TOKEN = "T0KEN-s3cret-123"


class Receiver:
    """A tiny HTTP server on loopback that records what it is sent (and can be slow)."""

    def __init__(self, delay: float = 0):
        self.requests: list[tuple[str, str, bytes]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests.append((self.command, self.path, body))
                time.sleep(delay)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            do_GET = do_POST = _any

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{TOKEN}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


NOTIFY = '[notify]\nwebhook_url_env = "HOOK_URL"\nheartbeat_url_env = "PING_URL"\non_success = true\ntimeout = "2s"\n'


def test_webhook_and_heartbeat_on_success_and_failure(pg, tmp_path, receiver):
    s = make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"', extra_toml=NOTIFY)
    s.env.update(HOOK_URL=receiver.url, PING_URL=receiver.url + "/ping")
    ok = s.cli("backup", "-p", str(s.policy))
    assert ok.code == 0, ok.err
    paths = [(m, p) for m, p, _ in receiver.requests]
    assert ("GET", f"/{TOKEN}/ping/start") in paths and ("GET", f"/{TOKEN}/ping") in paths
    post = [json.loads(b) for m, _, b in receiver.requests if m == "POST"]
    assert post[0]["ok"] is True and post[0]["text"].startswith(f"drtool backup of {post[0]['policy']} succeeded")
    receiver.requests.clear()
    s.policy.write_text(s.policy.read_text().replace(f":{pg.port}/", ":1/"))
    bad = s.cli("backup", "-p", str(s.policy))
    assert bad.code == 1
    paths = [(m, p) for m, p, _ in receiver.requests]
    assert ("GET", f"/{TOKEN}/ping/fail") in paths
    post = [json.loads(b) for m, _, b in receiver.requests if m == "POST"]
    assert post[0]["ok"] is False and "FAILED" in post[0]["text"] and "cannot connect" in post[0]["text"]
    assert TOKEN not in ok.err + ok.out + bad.err + bad.out


def test_webhook_that_times_out_never_fails_the_backup(pg, tmp_path):
    slow = Receiver(delay=5)
    try:
        s = make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"', extra_toml=NOTIFY)
        s.env.update(HOOK_URL=slow.url, PING_URL=slow.url)
        r = s.cli("backup", "-p", str(s.policy))
        assert r.code == 0, r.err
        assert "webhook to 127.0.0.1 failed: timed out" in r.err or "failed: timed out" in r.err
        assert TOKEN not in r.err
        assert len(s.cli("list", "-p", str(s.policy), "--json").json["backups"]) == 1
    finally:
        slow.close()


def test_url_with_a_token_in_the_file_is_refused(pg, tmp_path):
    s = make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"',
                   extra_toml=f'[notify]\nwebhook_url = "https://hooks.example/{TOKEN}"\n', init=False)  # fmt: skip
    r = s.cli("backup", "-p", str(s.policy))
    assert r.code == 2 and "notify.webhook_url: secrets do not belong in the policy" in r.err
    assert TOKEN not in r.err


def test_json_logs_one_event_per_line(pg, tmp_path):
    s = make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"')
    r = s.cli("--log-format", "json", "backup", "-p", str(s.policy))
    assert r.code == 0, r.err
    events = [json.loads(line) for line in r.err.splitlines() if line.strip()]
    done = [e for e in events if e.get("backup_id")]
    assert done and done[0]["level"] == "info" and done[0]["job"] == "backup" and done[0]["command"] == "backup"
    assert done[0]["duration_seconds"] > 0 and done[0]["policy"] == s.db.replace("_", "-")
    s.policy.write_text(s.policy.read_text().replace(f":{pg.port}/", ":1/"))
    bad = s.cli("--log-format", "json", "backup", "-p", str(s.policy))
    errors = [json.loads(line) for line in bad.err.splitlines() if line.strip()]
    assert bad.code == 1 and any(e["level"] == "error" and "cannot connect" in e["msg"] for e in errors)


BAD_URLS = {  # shape -> (URL with the token, what the warning may show of it)
    "no scheme": (f"hooks.example/services/{TOKEN}", "a URL without scheme://host"),
    "spaces": (f"http://127.0.0.1:9/hook {TOKEN} x", "http://127.0.0.1"),
    "control chars": (f"http://127.0.0.1:9/{TOKEN}\x01\x7f/x", "http://127.0.0.1"),
    "bad port": (f"http://127.0.0.1:http/{TOKEN}", "http://127.0.0.1"),
    "unknown scheme": (f"gopher://hooks.example/{TOKEN}", "gopher://hooks.example"),
    "file scheme": (f"file:///tmp/{TOKEN}", "a URL without scheme://host"),
    "unresolvable host": (f"https://no-such-host.invalid/{TOKEN}?token={TOKEN}", "https://no-such-host.invalid"),
    "unbalanced ipv6": (f"http://[::1/{TOKEN}", "an unparsable URL"),
    "token in userinfo": (f"https://user:{TOKEN}@127.0.0.1:9/x", "https://127.0.0.1"),
}


@pytest.mark.parametrize("shape", list(BAD_URLS))
def test_a_bad_notification_url_never_fails_the_job_or_shows_its_token(pg, tmp_path, shape):
    url, shown = BAD_URLS[shape]
    s = make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"', extra_toml=NOTIFY)
    (tmp_path / "store").mkdir(exist_ok=True)
    s.env.update(HOOK_URL=url, PING_URL=url)
    r = s.cli("backup", "-p", str(s.policy))
    assert r.code == 0, r.err
    assert "Traceback" not in r.err
    assert f"webhook to {shown} failed: " in r.err and f"heartbeat to {shown} failed: " in r.err
    assert TOKEN not in r.err + r.out
    assert len(s.cli("list", "-p", str(s.policy), "--json").json["backups"]) == 1
