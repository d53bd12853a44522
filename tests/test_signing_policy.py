"""Policy [signing]: key_file and trusted_keys, validated with every problem named, secrets never echoed."""

from __future__ import annotations

import pytest
from test_policy import VALID, problems, write

from drtool.crypto import age, sshsig
from drtool.policy import load_policy

PRIV, PUB = sshsig.generate("orders-2026")
_, PUB2 = sshsig.generate()


def test_signing_section_loads_key_file_and_trusted_keys(tmp_path):
    p = load_policy(write(tmp_path, VALID + f'[signing]\nkey_file = "keys/sign.key"\n'
                                             f'trusted_keys = ["{PUB.line()}", "  {PUB2.line()}  "]\n'))  # fmt: skip
    assert p.signing.key_file == str((tmp_path / "keys" / "sign.key").resolve())
    assert p.signing.trusted_keys == (PUB.line(), PUB2.line())


def test_no_signing_section_means_nothing_signed_or_checked(tmp_path):
    p = load_policy(write(tmp_path, VALID))
    assert p.signing.key_file is None and p.signing.trusted_keys == ()


@pytest.mark.parametrize(
    "bad, expect",
    [
        ("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ user", "not an ssh-ed25519 public key line"),
        ("ssh-ed25519 not*base64", "not valid base64"),
        ("AAAAC3NzaC1lZDI1NTE5AAAAI", "not an ssh-ed25519 public key line"),
    ],
    ids=["rsa", "bad-base64", "no-type"],
)
def test_trusted_key_that_does_not_parse_is_named_by_index(tmp_path, bad, expect):
    found = problems(tmp_path, VALID + f'[signing]\ntrusted_keys = ["{PUB.line()}", "{bad}"]\n')
    assert len(found) == 1 and "signing.trusted_keys[1]:" in found[0] and expect in found[0]


def test_the_same_trusted_key_twice_is_flagged(tmp_path):
    other_comment = PUB.line().rsplit(" ", 1)[0] + " copy"
    found = problems(tmp_path, VALID + f'[signing]\ntrusted_keys = ["{PUB.line()}", "{other_comment}"]\n')
    assert len(found) == 1
    assert "signing.trusted_keys[1]: the same key" in found[0] and "as signing.trusted_keys[0]" in found[0]
    assert PUB.fingerprint in found[0]


@pytest.mark.parametrize(
    "secret",
    [
        age.Identity.generate().encode(),
        PRIV.decode().replace("\n", "\\n"),  # the whole OpenSSH private key file
        PRIV.decode().splitlines()[1],  # one line of its base64 body
    ],
    ids=["age-identity", "openssh-private-key", "openssh-private-key-body"],
)
def test_private_key_pasted_into_trusted_keys_is_refused_without_echo(tmp_path, secret):
    found = problems(tmp_path, VALID + f'[signing]\ntrusted_keys = ["{secret}"]\n')
    text = "\n".join(found)
    assert len(found) == 1 and "signing.trusted_keys[0]: " in text
    # refused as a private key here, or earlier by the check for secrets anywhere in a policy
    assert any(w in text for w in ("is a private key", "holds an age identity", "secrets do not belong")), text
    for chunk in (secret[i : i + 12] for i in range(0, len(secret) - 12, 6)):
        assert chunk not in text


def test_private_key_pasted_into_key_file_is_refused_without_echo(tmp_path):
    secret = PRIV.decode().replace("\n", "\\n")
    found = problems(tmp_path, VALID + f'[signing]\nkey_file = "{secret}"\n')
    assert len(found) == 1 and "signing.key_file" in found[0] and "secrets do not belong" in found[0]
    assert PRIV.decode().splitlines()[1][:20] not in found[0]


def test_unknown_signing_key_suggests_the_known_one(tmp_path):
    found = problems(tmp_path, VALID + f'[signing]\ntrusted_key = ["{PUB.line()}"]\n')
    assert len(found) == 1 and "did you mean 'signing.trusted_keys'" in found[0]
