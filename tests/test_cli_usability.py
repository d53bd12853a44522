"""Issue 14.5/14.6: options where a user expects them, periods in plain words, human units, no
Python reprs, warnings as warn rows, colour only on a terminal, logs through stdlib logging."""

from __future__ import annotations

import datetime as dt
import json
import os
import pty
import subprocess
import sys

import pytest
from helpers import make_setup

from drtool.app.reporting import months_before, period_start
from drtool.errors import UsageError

SCHEDULE = '[schedule]\nbackup = "0 0 1 1 *"\nprune = "0 0 1 1 *"\n[retention]\nkeep_last = 4\nkeep_within = "2d"\n'


@pytest.fixture
def local(pg, tmp_path):
    return make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"', extra_toml=SCHEDULE)


def on_terminal(setup, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run drtool with stdout on a pseudo-terminal; returns (exit code, what the terminal showed)."""
    primary, secondary = pty.openpty()
    full = {**os.environ, **{k: v for k, v in setup.env.items() if v is not None}, **(env or {})}
    full = {k: v for k, v in full.items() if k not in ("PGPASSWORD", "PGPASSFILE", "DRTOOL_POLICY")}
    if "NO_COLOR" not in (env or {}):
        full.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "drtool", *args], stdout=secondary, stderr=subprocess.PIPE,
                            env=full)  # fmt: skip
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(primary, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait()
    os.close(primary)
    return proc.returncode, b"".join(chunks).decode(errors="replace")


# -- 14.5 options ---------------------------------------------------------------------------------
@pytest.mark.integration
def test_run_takes_the_policy_option_like_every_command(local):
    by_option = local.cli("run", "-p", str(local.policy), "--dry-run")
    assert by_option.code == 0, by_option.err
    by_argument = local.cli("run", str(local.policy), "--dry-run")
    assert by_argument.code == 0 and by_argument.out == by_option.out
    none = local.cli("run")
    assert none.code == 2 and "run needs a policy" in none.err and "Traceback" not in none.err


@pytest.mark.integration
def test_report_periods_in_months_and_words_and_a_clear_error_otherwise(local, tmp_path):
    out = str(tmp_path / "r.json")
    base = ("report", "-p", str(local.policy), "--format", "json", "-o", out)
    assert local.cli(*base, "--since", "3mo").code == 0
    doc = json.loads((tmp_path / "r.json").read_text())
    start, end = (dt.datetime.fromisoformat(doc["period"][k].replace("Z", "+00:00")) for k in ("from", "to"))
    assert 89 <= (end - start).days <= 92
    spaced = local.cli(*base, "--since", "3", "months")
    assert spaced.code == 2 and "Traceback" not in spaced.err
    assert "unexpected argument 'months'" in spaced.err and "--since 3mo" in spaced.err
    minutes = local.cli(*base, "--since", "3m")
    assert minutes.code == 2 and "for months write 3mo" in minutes.err


@pytest.mark.integration
def test_report_to_stdout_with_dash(local, tmp_path):
    r = local.cli("report", "-p", str(local.policy), "--format", "json", "-o", "-", cwd=str(tmp_path))
    assert r.code == 0, r.err
    assert json.loads(r.out)["policies"][0]["policy"] == local.db.replace("_", "-")
    assert not (tmp_path / "-").exists() and not (tmp_path / "-.sha256").exists()


def test_keygen_json_help_says_what_it_prints():
    r = subprocess.run([sys.executable, "-m", "drtool", "keygen", "--help"], capture_output=True, text=True)
    shown = " ".join(r.stdout.split())  # help text is wrapped to the terminal width
    assert "{identity_file, recipient}" in shown and "private key is never printed" in shown


def test_months_are_calendar_months():
    end = dt.datetime(2026, 5, 31, 12, tzinfo=dt.UTC)
    assert months_before(end, 3) == dt.datetime(2026, 2, 28, 12, tzinfo=dt.UTC)
    assert months_before(end, 12) == dt.datetime(2025, 5, 31, 12, tzinfo=dt.UTC)
    assert period_start("1y", end) == dt.datetime(2025, 5, 31, 12, tzinfo=dt.UTC)
    assert period_start("90 days", end) == end - dt.timedelta(days=90)
    assert period_start("2w", end) == end - dt.timedelta(weeks=2)
    with pytest.raises(UsageError, match="for months write 3mo"):
        period_start("3m", end)
    with pytest.raises(UsageError, match="--since"):
        period_start("soon", end)


# -- 14.6 output for people -----------------------------------------------------------------------
@pytest.mark.integration
def test_prune_shows_rules_as_written_not_a_python_dict(local):
    assert local.cli("backup", "-p", str(local.policy)).code == 0
    r = local.cli("prune", "-p", str(local.policy), "--dry-run")
    assert r.code == 0, r.err
    assert "(rules: keep_last=4, keep_within=2d)" in r.out and "{" not in r.out


@pytest.mark.integration
def test_status_with_no_backups_says_so_and_ages_are_human(local):
    r = local.cli("status", "-p", str(local.policy))
    assert "no backups yet" in r.out, r.out
    assert local.cli("backup", "-p", str(local.policy)).code == 0
    r = local.cli("status", "-p", str(local.policy))
    assert "newest backup " in r.out and "s old" in r.out and "no backups yet" not in r.out


@pytest.mark.integration
def test_check_shows_warnings_as_warn_rows(local):
    r = local.cli("check", "-p", str(local.policy))  # no [signing].trusted_keys: a warning
    assert r.code == 0, r.err
    signing = [line for line in r.out.splitlines() if " signing " in line]
    assert signing and signing[0].split()[2] == "warn" and "warning:" not in signing[0]
    assert "origin of backups is not verified" in signing[0]


@pytest.mark.integration
def test_run_prints_a_line_when_nothing_is_due(local):
    first = local.cli("run", "-p", str(local.policy))  # the first run takes the yearly slot's backup
    assert first.code == 0, first.err
    again = local.cli("run", "-p", str(local.policy))
    assert again.code == 0 and again.out.strip(), again.err
    assert "nothing due (backup, prune not due)" in again.out


@pytest.mark.integration
def test_colour_on_a_terminal_only_and_never_with_no_color(local):
    piped = local.cli("check", "-p", str(local.policy))
    assert "\x1b[" not in piped.out
    code, shown = on_terminal(local, "check", "-p", str(local.policy))
    assert code == 0 and "\x1b[" in shown
    code, shown = on_terminal(local, "check", "-p", str(local.policy), env={"NO_COLOR": "1"})
    assert code == 0 and "\x1b[" not in shown and " ok " in shown


@pytest.mark.integration
def test_use_case_warnings_go_through_logging_in_both_formats(local):
    local.key.chmod(0o644)  # the use case warns that others can read the identity
    text = local.cli("check", "-p", str(local.policy))
    assert f"drtool: warning: identity file {local.key} is readable by other users; chmod 600 it" in text.err
    r = local.cli("--log-format", "json", "check", "-p", str(local.policy))
    events = [json.loads(line) for line in r.err.splitlines() if line.strip()]
    warned = [e for e in events if "is readable by other users" in e["msg"]]
    assert warned and warned[0]["level"] == "warning" and warned[0]["command"] == "check" and "ts" in warned[0]
