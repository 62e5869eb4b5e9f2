"""The service's front-door rules without a server: scopes, the token bucket, strict JSON bodies, request ids."""

from __future__ import annotations

import pytest

from lib.access import BodyError, TokenBucket, parse_json_body, request_id, required_scope, retry_after_header


def test_scopes_by_path() -> None:
    assert required_scope("/health") is None and required_scope("/ready") is None
    assert required_scope("/predict") == "predict"
    assert {required_scope(p) for p in ("/metrics", "/docs", "/openapi.json", "/redoc")} == {"metrics"}
    assert required_scope("/admin") == "predict" and required_scope("/health/") == "predict"  # exact paths only


def test_the_token_bucket_allows_the_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = bucket.take(0.0)
    assert wait == pytest.approx(0.5) and retry_after_header(wait) == "1"
    assert bucket.take(0.5) == 0.0 and bucket.take(0.5) > 0
    assert bucket.take(100.0) == 0.0 and bucket.tokens == pytest.approx(2.0)  # refilled to the burst, not beyond
    assert retry_after_header(2.01) == "3"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"customer_ids": NaN}', "customer_ids"),
        (b'{"customer_ids": ["a", Infinity]}', "customer_ids[1]"),
        (b'{"a": {"b": [1, -Infinity]}}', "a.b[1]"),
        (b'{"customer_ids": 1e999}', "customer_ids"),
        (b'{"x": ' + b"9" * 5000 + b"}", "body"),
        (b"[" * 100_000 + b"]" * 100_000, "body"),
        (b"\xc3\x28", "body"),
        (b'{"customer_ids": [', "body"),
    ],
)
def test_bodies_that_are_not_strict_json_name_their_field(body: bytes, field: str) -> None:
    with pytest.raises(BodyError) as raised:
        parse_json_body(body)
    assert raised.value.field == field
    assert len(str(raised.value)) < 200  # nothing of the input is quoted


def test_strict_json_reads_ordinary_bodies() -> None:
    assert parse_json_body('{"customer_ids": ["Zoë", "42"], "n": 1.5}'.encode()) == {"customer_ids": ["Zoë", "42"], "n": 1.5}


def test_request_ids_are_kept_only_when_safe() -> None:
    assert request_id("abc-1.2_3", lambda: "new") == "abc-1.2_3"
    for bad in (None, "", "a b", "x" * 65, "a\r\nb", "ü"):
        assert request_id(bad, lambda: "new") == "new"
