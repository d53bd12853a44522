"""`drtool schedule` makes the WAL daemon's systemd service for policies with [pitr] enabled."""

from __future__ import annotations

from helpers import run_cli

BASE = """name = "{name}"
[database]
dsn = "postgresql://app@127.0.0.1/app"
[storage]
url = "file://{tmp}/store"
[encryption]
recipients = ["age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"]
[objectives]
rpo = "1h"
rto = "1h"
[schedule]
backup = "0 * * * *"
"""


def test_schedule_makes_the_wal_daemon_service_running_as_postgres(tmp_path):
    (tmp_path / "fleet").mkdir()
    pitr = '[pitr]\nenabled = true\npgdata = "/var/lib/postgresql/15/main"\nspool_dir = "/var/spool/drtool"\n'
    (tmp_path / "fleet" / "a.toml").write_text(BASE.format(name="with-pitr", tmp=tmp_path) + pitr)
    (tmp_path / "fleet" / "b.toml").write_text(BASE.format(name="dumps-only", tmp=tmp_path))
    r = run_cli("schedule", "-p", str(tmp_path / "fleet"), "--format", "systemd", "--drtool-bin", "/usr/bin/drtool")
    assert r.code == 0, r.err
    assert "# ---- drtool-wal-with-pitr.service" in r.out and "drtool-wal-dumps-only" not in r.out
    unit = r.out.split("# ---- drtool-wal-with-pitr.service")[1]
    assert "User=postgres\n" in unit and "Restart=always\n" in unit
    assert f"ExecStart=/usr/bin/drtool wal daemon --policy {tmp_path / 'fleet' / 'a.toml'}\n" in unit
    assert "ReadWritePaths=-/var/spool/drtool\n" in unit


def test_cron_format_and_only_jobs_make_no_wal_daemon_unit(tmp_path):
    pitr = '[pitr]\nenabled = true\npgdata = "/var/lib/postgresql/15/main"\nspool_dir = "/var/spool/drtool"\n'
    (tmp_path / "a.toml").write_text(BASE.format(name="with-pitr", tmp=tmp_path) + pitr)
    for args in (["--format", "cron"], ["--format", "systemd", "--only", "backup"]):
        r = run_cli("schedule", "-p", str(tmp_path / "a.toml"), *args, "--drtool-bin", "/usr/bin/drtool")
        assert r.code == 0 and "wal daemon" not in r.out, r.err
