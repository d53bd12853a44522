"""policies/example.toml is the reference users copy: every commented key line can be uncommented
as it stands, and the file still loads, apart from the values only a user can supply."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from drtool.errors import PolicyError
from drtool.policy import load_policy

EXAMPLE = Path(__file__).resolve().parents[1] / "policies" / "example.toml"
COMMENTED_KEY = re.compile(r"(?m)^# ([a-z_]+ = )")
COMMENTED_SECTION = re.compile(r"(?m)^# (\[[a-z_.]+\])")  # an optional section shown whole, commented
# Placeholders that cannot be valid until replaced by the user's own value.
NEEDS_REAL_VALUES = ("signing.trusted_keys[0]: the ssh-ed25519 key is not valid base64",)


def test_example_policy_loads_as_shipped():
    assert load_policy(EXAMPLE).name == "orders"


def test_every_commented_key_can_be_uncommented_without_breaking_the_file(tmp_path):
    text = EXAMPLE.read_text()
    assert len(COMMENTED_KEY.findall(text)) >= 20  # the optional keys are there to uncomment
    copy = tmp_path / "example.toml"
    copy.write_text(COMMENTED_SECTION.sub(r"\1", COMMENTED_KEY.sub(r"\1", text)))
    with pytest.raises(PolicyError) as e:
        load_policy(copy)
    problems = [p.removeprefix(f"{copy}: ") for p in e.value.problems]
    assert problems == list(NEEDS_REAL_VALUES)


def test_uncommenting_the_example_turns_on_pitr_and_base_backups(tmp_path):
    text = EXAMPLE.read_text()
    assert COMMENTED_SECTION.search(text) and "# base = " in text
    copy = tmp_path / "example.toml"
    copy.write_text(COMMENTED_SECTION.sub(r"\1", COMMENTED_KEY.sub(r"\1", text)))
    copy.write_text(copy.read_text().replace("trusted_keys = [", "# trusted_keys = ["))  # a user's own key
    policy = load_policy(copy)
    assert policy.pitr.enabled and policy.pitr.spool_dir and policy.schedule.base == "0 2 * * 0"
