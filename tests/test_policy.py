"""Policy validation: every rule, each problem named with file and key path."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run_cli

from drtool.crypto import age
from drtool.durations import parse_duration
from drtool.errors import PolicyError
from drtool.policy import load_fleet, load_policies, load_policy, shape

RECIPIENT = age.Identity.generate().recipient

VALID = f"""
name = "orders"
[database]
dsn = "postgresql://backup@db1.internal:5432/orders"
password_env = "ORDERS_PGPASSWORD"
[schedule]
backup = "0 */6 * * *"
drill = "30 4 * * *"
prune = "45 4 * * *"
timezone = "Europe/Berlin"
[retention]
keep_last = 4
keep_daily = 7
keep_within = "2d"
[storage]
url = "s3://acme-backups/pg"
region = "eu-central-1"
[[storage.copies]]
url = "s3://acme-backups-dr/pg"
region = "us-east-1"
[encryption]
recipients = ["{RECIPIENT}"]
identity_file = "/etc/drtool/orders.key"
[objectives]
rpo = "6h"
rto = "30m"
[drill]
checks = ["SELECT count(*) > 0 FROM orders"]
"""


def write(tmp_path: Path, text: str, name: str = "p.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(PolicyError) as e:
        load_policy(write(tmp_path, text))
    return e.value.problems


def test_valid_policy_loads_with_typed_values(tmp_path):
    p = load_policy(write(tmp_path, VALID))
    assert p.name == "orders"
    assert p.rpo == 6 * 3600 and p.rto == 30 * 60
    assert p.retention.keep_within == 2 * 86400 and p.retention.keep_daily == 7
    assert p.storage.region == "eu-central-1" and p.copies[0].url == "s3://acme-backups-dr/pg"
    assert p.schedule.timezone == "Europe/Berlin"
    assert p.warnings == ()


@pytest.mark.parametrize(
    "text,expected",
    [("90s", 90), ("15m", 900), ("6h", 21600), ("7d", 604800), ("2w", 1209600), ("1h30m", 5400)],
)
def test_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["", "6", "6 hours", "h6", "-1h", "1.5h"])
def test_bad_durations_are_rejected(bad):
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(bad)


def test_unknown_key_suggests_closest(tmp_path):
    found = problems(tmp_path, VALID.replace("keep_daily", "keep_dayly"))
    assert any("retention.keep_dayly: unknown key (did you mean 'retention.keep_daily'?)" in p for p in found)
    found = problems(tmp_path, VALID.replace("[objectives]", "[objectivs]"))
    assert any("objectivs: unknown key (did you mean 'objectives'?)" in p for p in found)


@pytest.mark.parametrize(
    "change,key,words",
    [
        (('name = "orders"', 'name = "Orders_DB"'), "name", "[a-z0-9-]"),
        (('name = "orders"', ""), "name", "missing"),
        (
            ('dsn = "postgresql://backup@db1', 'dsn = "postgresql://backup:hunter2@db1'),
            "database.dsn",
            "password",
        ),
        (
            ('password_env = "ORDERS_PGPASSWORD"', 'password_env = "not a name"'),
            "database.password_env",
            "not an env",
        ),
        (('backup = "0 */6 * * *"', 'backup = "every six hours"'), "schedule.backup", "not a valid cron"),
        (
            ('timezone = "Europe/Berlin"', 'timezone = "Mars/Olympus"'),
            "schedule.timezone",
            "not a known time zone",
        ),
        (("keep_last = 4", "keep_last = -1"), "retention.keep_last", "0 or more"),
        (("keep_last = 4", 'keep_last = "four"'), "retention.keep_last", "must be an integer"),
        (('keep_within = "2d"', 'keep_within = "two days"'), "retention.keep_within", "not a duration"),
        (('url = "s3://acme-backups/pg"', 'url = "ftp://host/x"'), "storage.url", "scheme must be"),
        (('url = "s3://acme-backups/pg"', 'url = "s3://A_B/x"'), "storage.url", "bucket name"),
        (('url = "s3://acme-backups/pg"', 'url = "file://relative/path"'), "storage.url", "file:///absolute"),
        (('url = "s3://acme-backups-dr/pg"', 'url = "gs://x/y"'), "storage.copies[0].url", "scheme must be"),
        (
            (f'recipients = ["{RECIPIENT}"]', 'recipients = ["age1notakey"]'),
            "encryption.recipients[0]",
            "not an age",
        ),
        ((f'recipients = ["{RECIPIENT}"]', "recipients = []"), "encryption.recipients", "at least one"),
        (('rpo = "6h"', 'rpo = "0s"'), "objectives.rpo", "longer than 0s"),
        (('rto = "30m"', 'rto = "soon"'), "objectives.rto", "not a duration"),
        (("[storage]", "[storage]\nobject_lock_days = 0"), "storage.object_lock_days", "1 or more"),
        (("[storage]", '[storage]\nendpoint_url = "s3.example.net"'), "storage.endpoint_url", "http(s)://"),
        (
            ("[storage]", '[storage]\nrequest_checksums = "always"'),
            "storage.request_checksums",
            "when_required",
        ),
        (("[drill]", '[drill]\npick = "oldest"'), "drill.pick", "latest"),
        (("[storage]", '[storage]\nretry_mode = "legacy"'), "storage.retry_mode", "standard or adaptive"),
        (("[storage]", "[storage]\nmax_attempts = 0"), "storage.max_attempts", "1 or more"),
        (("[drill]", '[drill]\ntarget_dsn = "host=x password=pw"'), "drill.target_dsn", "password"),
        (("[database]", '[database]\npassword = "x"'), "database.password", "secrets do not belong"),
        (
            ("[encryption]", '[encryption]\nsecret_key = "x"'),
            "encryption.secret_key",
            "secrets do not belong",
        ),
        (
            ('identity_file = "/etc/drtool/orders.key"', 'identity_file = "AGE-SECRET-KEY-1QQQ"'),
            "encryption.identity_file",
            "secrets do not belong",
        ),
        (
            (
                '[storage]\nurl = "s3://acme-backups/pg"',
                '[storage]\nurl = "s3://AKIA:secret@acme-backups/pg"',
            ),
            "storage.url",
            "",
        ),
    ],
)
def test_each_rule_names_file_and_key(tmp_path, change, key, words):
    old, new = change
    assert old in VALID
    found = problems(tmp_path, VALID.replace(old, new, 1))
    path = str(tmp_path / "p.toml")
    hits = [p for p in found if p.startswith(f"{path}: {key}:") and words in p]
    assert hits, found


def test_every_problem_is_reported_at_once(tmp_path):
    text = VALID.replace('rpo = "6h"', 'rpo = "x"').replace('backup = "0 */6 * * *"', 'backup = "bad"')
    found = problems(tmp_path, text)
    assert len(found) == 2


def test_missing_sections_are_named(tmp_path):
    found = problems(tmp_path, 'name = "x"\n')
    assert any(": database.dsn: missing" in p for p in found)
    assert any(": storage: missing" in p for p in found)
    assert any(": encryption.recipients: missing" in p for p in found)


def test_not_toml_is_one_clear_problem(tmp_path):
    found = problems(tmp_path, "name = 'x\n[[[")
    assert len(found) == 1 and "not valid TOML" in found[0]


def test_backup_schedule_sparser_than_rpo_warns(tmp_path):
    p = load_policy(write(tmp_path, VALID.replace('backup = "0 */6 * * *"', 'backup = "0 3 * * *"')))
    assert any("schedule.backup" in w and "RPO" in w for w in p.warnings)


def test_folder_of_policies_and_duplicate_names(tmp_path):
    write(tmp_path, VALID, "a.toml")
    write(tmp_path, VALID.replace('name = "orders"', 'name = "billing"'), "b.toml")
    assert [p.name for p in load_policies(tmp_path)] == ["orders", "billing"]  # file name order
    write(tmp_path, VALID, "c.toml")
    with pytest.raises(PolicyError, match="is also used by"):
        load_policies(tmp_path)


def test_missing_policy_path_and_empty_folder(tmp_path):
    with pytest.raises(PolicyError, match="no such policy file"):
        load_policies(tmp_path / "nope.toml")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PolicyError, match="no \\*.toml policy files"):
        load_policies(tmp_path / "empty")


def test_cli_invalid_policy_exits_2_one_line_per_problem(tmp_path):
    path = write(tmp_path, VALID.replace("keep_daily", "keep_dayly").replace('rto = "30m"', 'rto = "x"'))
    r = run_cli("check", "-p", str(path))
    assert r.code == 2
    lines = r.err.strip().splitlines()
    assert len(lines) == 2 and all(ln.startswith(f"drtool: error: {path}: ") for ln in lines)
    assert "Traceback" not in r.err


def test_cli_dsn_password_is_not_echoed(tmp_path):
    path = write(tmp_path, VALID.replace("backup@db1", "backup:hunter2-pw@db1"))
    r = run_cli("backup", "-p", str(path))
    assert r.code == 2 and "hunter2-pw" not in r.err + r.out
    assert "database.password_env" in r.err


def test_example_and_demo_policies_are_valid():
    root = Path(__file__).resolve().parents[1] / "policies"
    names = {p.name for p in load_policies(root)}
    assert {"orders", "demo"} <= names


def test_cron_that_never_fires_is_refused(tmp_path):
    found = problems(tmp_path, VALID.replace('backup = "0 */6 * * *"', 'backup = "0 0 30 2 *"'))
    assert any("schedule.backup: '0 0 30 2 *' never fires" in p for p in found)


def test_backups_every_minute_for_an_rpo_of_days_warns(tmp_path):
    p = load_policy(write(tmp_path, VALID.replace('backup = "0 */6 * * *"', 'backup = "* * * * *"')
                          .replace('rpo = "6h"', 'rpo = "2d"')))  # fmt: skip
    assert any("fires every 1m for an RPO of 2d" in w for w in p.warnings)


def test_retention_that_keeps_nothing_warns(tmp_path):
    text = (
        VALID.replace("keep_last = 4\n", "")
        .replace("keep_daily = 7\n", "")
        .replace('keep_within = "2d"', 'keep_within = "1h"')
    )
    p = load_policy(write(tmp_path, text))
    assert any("prune would keep nothing but the newest backup" in w for w in p.warnings)


# -- a folder is a fleet: each file loaded on its own ---------------------------------------------


def test_fleet_loads_the_valid_files_and_names_the_invalid_ones(tmp_path):
    write(tmp_path, VALID, "a.toml")
    write(tmp_path, VALID.replace('name = "orders"', 'name = "billing"').replace("keep_daily", "keep_dayly"), "b.toml")
    write(tmp_path, "not toml [[[", "c.toml")
    fleet = load_fleet(tmp_path)
    assert [p.name for p in fleet.policies] == ["orders"]
    assert [(b.source.name, b.name) for b in fleet.invalid] == [("b.toml", "billing"), ("c.toml", None)]
    assert "retention.keep_dayly: unknown key" in fleet.invalid[0].problems[0]


def test_a_single_invalid_file_still_raises_every_problem(tmp_path):
    path = write(tmp_path, VALID.replace("keep_daily", "keep_dayly").replace('rto = "30m"', 'rto = "x"'))
    with pytest.raises(PolicyError) as e:
        load_fleet(path)
    assert len(e.value.problems) == 2


# -- DSNs as libpq parses them ---------------------------------------------------------------------

HIDDEN_PASSWORDS = [
    "postgresql://backup@db1/orders?%70assword=hunter2-pw",
    "postgresql://backup@db1/orders?sslmode=require&pass%77ord=hunter2-pw",
    "postgresql://backup@db1/orders?%73%73%6c%70%61%73%73%77%6f%72%64=hunter2-pw",
    "postgresql://backup:hunter2%2Dpw@db1/orders",
    "host=db1 dbname=orders password = 'hunter2-pw'",
    "host=db1 dbname=orders sslpassword=hunter2-pw",
    "postgresql://backup@db1/?dbname=host%3Ddb1%20password%3Dhunter2-pw",
]


@pytest.mark.parametrize("dsn", HIDDEN_PASSWORDS)
@pytest.mark.parametrize("key", ["database.dsn", "drill.target_dsn"])
def test_a_password_hidden_in_a_dsn_is_refused_without_echo(tmp_path, dsn, key):
    if key == "database.dsn":
        text = VALID.replace('"postgresql://backup@db1.internal:5432/orders"', f'"{dsn}"')
    else:
        text = VALID.replace("[drill]", f'[drill]\ntarget_dsn = "{dsn}"')
    found = problems(tmp_path, text)
    assert any(p.startswith(f"{tmp_path / 'p.toml'}: {key}: contains a password") for p in found), found
    assert not any("hunter2" in p for p in found)


def test_a_dsn_libpq_cannot_parse_is_refused_without_echo(tmp_path):
    text = VALID.replace('"postgresql://backup@db1.internal:5432/orders"', '"host=db1 hunter2-pw"')
    found = problems(tmp_path, text)
    assert any("database.dsn: is not a libpq connection string" in p for p in found)
    assert not any("hunter2" in p for p in found)


@pytest.mark.parametrize("dsn", HIDDEN_PASSWORDS)
def test_restore_target_with_a_hidden_password_exits_2_without_echo(tmp_path, dsn):
    path = write(tmp_path, VALID)
    r = run_cli("restore", "-p", str(path), "--target", dsn)
    assert r.code == 2 and "--target carries a password" in r.err, r.err
    assert "hunter2" not in r.err + r.out and "Traceback" not in r.err


# -- every number is bounded -----------------------------------------------------------------------


def _int_keys(schema: dict, prefix: str = "") -> list[str]:
    out = []
    for key, want in schema.items():
        if isinstance(want, dict):
            out += _int_keys(want, f"{prefix}{key}.")
        elif isinstance(want, list):
            out += _int_keys(want[0], f"{prefix}{key}[0].")
        elif want == "int":
            out.append(prefix + key)
    return out


INT_KEYS = _int_keys(shape.SCHEMA)
DURATION_KEYS = sorted({"retention.keep_within", "objectives.rpo", "objectives.rto", "notify.timeout",
                        *shape.DURATION_BOUNDS})  # fmt: skip


def _with(key: str, value: str) -> str:
    """VALID with key (a.b or storage.copies[0].c) set to a TOML value, replacing any line of that key."""
    section, _, leaf = key.rpartition(".")
    header = "[[storage.copies]]" if section == "storage.copies[0]" else f"[{section}]"
    text = "\n".join(ln for ln in VALID.splitlines() if not ln.startswith(f"{leaf} ="))
    if header not in text:
        text += f"\n{header}\n"
    return text.replace(header, f"{header}\n{leaf} = {value}", 1)


def test_every_numeric_key_is_known_to_this_test():
    assert {"retention.keep_last", "backup.zstd_threads", "storage.max_attempts",
            "storage.copies[0].object_lock_days"} <= set(INT_KEYS)  # fmt: skip


@pytest.mark.parametrize("key", INT_KEYS)
@pytest.mark.parametrize("huge", [10**20, 2**63, 10**400])
def test_every_integer_key_refuses_a_huge_value(tmp_path, key, huge):
    found = problems(tmp_path, _with(key, str(huge)))
    assert any(p.startswith(f"{tmp_path / 'p.toml'}: {key}: ") and "largest allowed" in p for p in found), found


@pytest.mark.parametrize("key", DURATION_KEYS)
@pytest.mark.parametrize("huge", ["99999999999w", "1" + "0" * 40 + "s", "36501d"])
def test_every_duration_key_refuses_a_huge_value(tmp_path, key, huge):
    found = problems(tmp_path, _with(key, f'"{huge}"'))
    assert any(p.startswith(f"{tmp_path / 'p.toml'}: {key}: ") and "longer than" in p for p in found), found


@pytest.mark.parametrize("key", INT_KEYS)
def test_the_largest_allowed_integer_is_accepted(tmp_path, key):
    top = shape.INT_BOUNDS.get(shape.bound_key(key), shape.INT_MAX)
    load_policy(write(tmp_path, _with(key, str(top))))


def test_a_number_of_thousands_of_digits_is_one_clear_problem(tmp_path):
    found = problems(tmp_path, VALID.replace("keep_last = 4", "keep_last = " + "9" * 5000))
    assert len(found) == 1 and "not valid TOML" in found[0] and "9999" not in found[0]


def test_cli_huge_keep_within_exits_2_naming_the_key(tmp_path):
    path = write(tmp_path, VALID.replace('keep_within = "2d"', 'keep_within = "99999999999w"'))
    r = run_cli("prune", "-p", str(path))
    assert r.code == 2 and f"{path}: retention.keep_within: " in r.err and "Traceback" not in r.err


def test_report_since_huge_exits_2(tmp_path):
    path = write(tmp_path, VALID)
    r = run_cli("report", "-p", str(path), "--format", "json", "--output", str(tmp_path / "r.json"),
                "--since", "99999999999w")  # fmt: skip
    assert r.code == 2 and "--since" in r.err and "Traceback" not in r.err


# -- an age identity anywhere is refused, never echoed ---------------------------------------------

SECRET_BODY = age.Identity.generate().encode().removeprefix("AGE-SECRET-KEY-1")
AGE_SECRET = "AGE-SECRET-KEY-1" + SECRET_BODY


@pytest.mark.parametrize(
    "change,where",
    [
        (("[drill]\nchecks = [", f"[drill]\nchecks = [\"SELECT '{AGE_SECRET}' <> ''\", "), "drill.checks[0]"),
        (("[storage]", f"# old key: {AGE_SECRET}\n[storage]"), "line "),
        ((f'recipients = ["{RECIPIENT}"]', f'recipients = ["{AGE_SECRET}"]'), "encryption.recipients[0]"),
        ((f'recipients = ["{RECIPIENT}"]', f'recipients = "{AGE_SECRET}"'), "encryption.recipients"),
        (("[storage]", f"[storage]\n{AGE_SECRET} = 1"), "storage.(a key)"),
        (("[storage]", f'[storage]\nnote = "{AGE_SECRET.lower()}"'), "storage.note"),
        (("[storage]", f"[storage\n# {AGE_SECRET}"), "line "),
    ],
)
def test_an_age_identity_anywhere_is_refused_without_echo(tmp_path, change, where):
    old, new = change
    assert old in VALID
    found = problems(tmp_path, VALID.replace(old, new, 1))
    path = str(tmp_path / "p.toml")
    assert any(p.startswith(f"{path}: {where}") and "age identity" in p for p in found), found
    text = "\n".join(found)
    assert SECRET_BODY[:8] not in text and SECRET_BODY[:8].lower() not in text


def test_storage_read_timeout_defaults_to_a_minute_and_parses_per_target(tmp_path):
    assert load_policy(write(tmp_path, VALID)).storage.read_timeout == 60
    text = VALID.replace('region = "eu-central-1"', 'region = "eu-central-1"\nread_timeout = "2s"')
    text = text.replace('region = "us-east-1"', 'region = "us-east-1"\nread_timeout = "5m"')
    p = load_policy(write(tmp_path, text))
    assert (p.storage.read_timeout, p.copies[0].read_timeout) == (2, 300)


@pytest.mark.parametrize(
    "value, words",
    [("0s", "longer than 0s"), ("2h", "longer than the largest allowed, 1h"), ("soon", "not a duration")],
)
def test_storage_read_timeout_is_bounded(tmp_path, value, words):
    text = VALID.replace('region = "eu-central-1"', f'region = "eu-central-1"\nread_timeout = "{value}"')
    found = problems(tmp_path, text)
    assert len(found) == 1 and "storage.read_timeout" in found[0] and words in found[0], found


@pytest.mark.parametrize(
    "expr",
    ["0 0 * * *", "*/5 * * * *", "* * * * *", "* 0,12 * * *", "0-59 0 * * *", "5,5,10 1-3 * * *", "@hourly",
     "30 1 * * 1", "0 0 1 */2 *", "0 0 L * *", "0 0 * * 5#3", "0 0 29 2 *", "0 0 * * * 30"],
)  # fmt: skip
def test_schedule_gaps_are_those_of_croniters_first_60_firings(expr):
    """The gaps behind the schedule warnings: counted from the expanded fields for an expression
    that fires every day alike, and still exactly croniter's (60 firings from 2026-01-01)."""
    import datetime as dt

    from croniter import croniter

    from drtool.policy import rules

    it = croniter(expr, dt.datetime(2026, 1, 1))
    times = [it.get_next(dt.datetime) for _ in range(60)]
    spans = [int((b - a).total_seconds()) for a, b in zip(times, times[1:], strict=False)]
    assert rules._cron_gaps(expr) == (min(spans), max(spans))


def test_a_fleet_sharing_cron_expressions_is_validated_with_one_croniter_pass_per_expression(tmp_path, monkeypatch):
    """Every command loads the whole policy folder: 1,000 policies spent ~11 CPU-s stepping croniter
    through 60 firings of each expression of each policy (issue 15)."""
    from croniter import croniter

    from drtool.policy import rules

    rules._cron_gaps.cache_clear()
    steps = []
    real = croniter.get_next
    monkeypatch.setattr(croniter, "get_next", lambda self, *a, **k: steps.append(1) or real(self, *a, **k))
    monthly = VALID.replace('backup = "0 */6 * * *"', 'backup = "0 3 1 * *"').replace('rpo = "6h"', 'rpo = "40d"')
    for i in range(20):
        write(tmp_path, monthly.replace('name = "orders"', f'name = "p{i:02d}"'), f"p{i:02d}.toml")
    fleet = load_fleet(tmp_path)
    assert len(fleet.policies) == 20 and not fleet.invalid
    assert len(steps) <= 60  # the monthly backup's 60 firings once; the daily drill and prune need no croniter
