"""The lean reads' own SigV4 presigner (storage/sigv4.py): it must make exactly the URL botocore's
generate_presigned_url makes for the same client, bucket, request and second, or not be used."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config

from drtool.storage import sigv4

KEYS = ["pol/backups/20261130T000000Z-ab12cd/manifest.json", "a b/c+d/%20/é<&>'()*!~.x", "x//y/./z", "=&?#"]
LISTS = [{"Prefix": "pol/backups/"}, {"Prefix": "a b/é+%/", "ContinuationToken": "1/a+b=c d"},
         {"Prefix": "", "StartAfter": "pol/x y"}]  # fmt: skip
EXPIRES = 300
CLIENTS = [  # (addressing style, endpoint, region, session token)
    ("path", "http://127.0.0.1:8333", "us-east-1", None),
    ("path", "http://localhost:80", "eu-west-1", "token/+="),
    ("virtual", "https://s3.eu-central-1.amazonaws.com", "eu-central-1", None),
    ("auto", None, "us-west-2", "FwoGZXIvYXdzE+/="),
    ("virtual", "https://minio.example:9000", "us-east-1", None),
]


def client(style: str, endpoint: str | None, region: str, token: str | None, **config):
    session = boto3.session.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="wJalr/K7MDENG+bPxRfi",
                                    aws_session_token=token, region_name=region)  # fmt: skip
    cfg = Config(signature_version=config.pop("signature_version", "s3v4"), s3={"addressing_style": style}, **config)
    return session.client("s3", endpoint_url=endpoint, config=cfg)


def as_botocore(c, operation: str, params: dict) -> tuple[str, str]:
    """botocore's presigned URL, and its time stamp."""
    url = c.generate_presigned_url(operation, Params=params, ExpiresIn=EXPIRES)
    return url, parse_qs(urlsplit(url).query)["X-Amz-Date"][0]


def same_url(ours: str | None, theirs: str) -> None:
    assert ours is not None
    a, b = urlsplit(ours), urlsplit(theirs)
    assert (a.scheme, a.netloc, a.path) == (b.scheme, b.netloc, b.path)
    assert sorted(a.query.split("&")) == sorted(b.query.split("&"))


@pytest.mark.parametrize("style,endpoint,region,token", CLIENTS)
def test_the_signer_makes_the_url_botocore_makes(style, endpoint, region, token):
    c = client(style, endpoint, region, token)
    signer = sigv4.presigner(c, "drtool-bucket", EXPIRES)
    assert signer is not None
    for key in KEYS:
        url, stamp = as_botocore(c, "get_object", {"Bucket": "drtool-bucket", "Key": key})
        same_url(signer.url("get_object", {"Bucket": "drtool-bucket", "Key": key}, EXPIRES, stamp), url)
    for params in LISTS:
        url, stamp = as_botocore(c, "list_objects_v2", {"Bucket": "drtool-bucket", **params})
        same_url(signer.url("list_objects_v2", {"Bucket": "drtool-bucket", **params}, EXPIRES, stamp), url)


def test_the_signer_uses_the_credentials_of_the_moment():
    """Refreshed credentials (a role's, say) are read at each signature, not kept from the samples."""
    c = client(*CLIENTS[0])
    signer = sigv4.presigner(c, "drtool-bucket", EXPIRES)
    assert signer is not None
    creds = c._request_signer._credentials
    creds.access_key, creds.secret_key, creds.token = "AKIDNEW", "another/secret", "new-token"
    url, stamp = as_botocore(c, "get_object", {"Bucket": "drtool-bucket", "Key": KEYS[0]})
    assert "AKIDNEW" in url and "new-token" in url
    same_url(signer.url("get_object", {"Bucket": "drtool-bucket", "Key": KEYS[0]}, EXPIRES, stamp), url)


def test_a_request_the_signer_does_not_know_is_left_to_botocore():
    signer = sigv4.presigner(client(*CLIENTS[0]), "drtool-bucket", EXPIRES)
    assert signer is not None
    assert signer.url("get_object", {"Bucket": "drtool-bucket", "Key": "k", "Range": "bytes=1-"}, 300) is None
    assert signer.url("list_objects_v2", {"Bucket": "drtool-bucket", "Delimiter": "/"}, 300) is None
    assert signer.url("head_object", {"Bucket": "drtool-bucket", "Key": "k"}, 300) is None
    # an empty key would address the bucket itself (a listing), where botocore refuses the call
    assert signer.url("get_object", {"Bucket": "drtool-bucket", "Key": ""}, 300) is None


@pytest.mark.parametrize("kind", ["sigv2", "anonymous"])
def test_a_client_whose_urls_have_another_form_keeps_botocore_presigning(kind):
    """SigV2 URLs do not match what this signer makes; an anonymous client has nothing to sign
    with: either way no signer, and the lean read presigns with botocore (or goes the full way)."""
    c = client(*CLIENTS[0], signature_version="s3" if kind == "sigv2" else UNSIGNED)
    assert sigv4.presigner(c, "drtool-bucket", EXPIRES) is None


def test_a_signer_is_learnt_once_per_client_and_bucket():
    c = client(*CLIENTS[0])
    first = sigv4.presigner(c, "drtool-bucket", EXPIRES)
    assert sigv4.presigner(c, "drtool-bucket", EXPIRES) is first
    other = sigv4.presigner(c, "other-bucket", EXPIRES)
    assert other is not None and other is not first
    assert "/other-bucket/" in (other.url("get_object", {"Bucket": "other-bucket", "Key": "k"}, 300) or "")
