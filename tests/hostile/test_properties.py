"""Properties, checked by hypothesis over generated inputs (derandomized: the same cases every run).

- `signatures.verify`: a delivery signed with a known key verifies; any change to its id,
  timestamp, body or signature is refused; one valid entry among several, under one key among
  several, is enough; and whatever the headers, it answers or raises SignatureError, nothing else.
- `naming.output_name`: always at most 1,024 bytes, inside the prefix, no empty/`.`/`..` segment,
  ending in `.png`, deterministic, free of control characters.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import random
import unicodedata

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from bgremove import errors, naming, signatures

PROPERTY_SETTINGS = settings(max_examples=200, derandomize=True, deadline=None, database=None)
TOLERANCE = 300
NOW = 1_750_000_000

keys = st.binary(min_size=1, max_size=64)
# A header value as a server hands it over: printable text.
webhook_ids = st.text(
    st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs")), min_size=1, max_size=80
)
bodies = st.binary(max_size=2048)
skews = st.integers(min_value=-TOLERANCE + 1, max_value=TOLERANCE - 1)


def _headers(webhook_id: str, timestamp: str, signature: str) -> dict[str, str]:
    return {"webhook-id": webhook_id, "webhook-timestamp": timestamp, "webhook-signature": signature}


def _verify(headers: dict[str, str], body: bytes, key_list: list[bytes], now: float = NOW + 0.5) -> str:
    # A float clock, as time.time() is.
    return signatures.verify(headers, body, key_list, TOLERANCE, lambda: now)


def _refused(headers: dict[str, str], body: bytes, key_list: list[bytes]) -> bool:
    try:
        _verify(headers, body, key_list)
    except errors.SignatureError:
        return True
    return False


@PROPERTY_SETTINGS
@given(key=keys, webhook_id=webhook_ids, body=bodies, skew=skews)
def test_a_signed_delivery_verifies(key: bytes, webhook_id: str, body: bytes, skew: int) -> None:
    ts = NOW + skew
    headers = _headers(webhook_id, str(ts), signatures.sign(key, webhook_id, ts, body))
    assert _verify(headers, body, [key]) == webhook_id


def test_our_signature_is_the_standard_webhooks_one() -> None:
    # `sign` is used to make the cases below; check it against the scheme spelled out by hand.
    key, webhook_id, ts, body = b"k" * 24, "msg_1", NOW, b'{"a": 1}'
    digest = hmac.new(key, b"msg_1.1750000000." + body, hashlib.sha256).digest()
    assert signatures.sign(key, webhook_id, ts, body) == "v1," + base64.b64encode(digest).decode()


@PROPERTY_SETTINGS
@given(key=keys, webhook_id=webhook_ids, other_id=webhook_ids, body=bodies, skew=skews)
def test_any_change_to_the_id_is_refused(key: bytes, webhook_id: str, other_id: str, body: bytes, skew: int) -> None:
    assume(other_id != webhook_id)
    ts = NOW + skew
    headers = _headers(other_id, str(ts), signatures.sign(key, webhook_id, ts, body))
    assert _refused(headers, body, [key])


@PROPERTY_SETTINGS
@given(key=keys, webhook_id=webhook_ids, body=bodies, skew=skews, data=st.data())
def test_any_change_to_the_timestamp_is_refused(
    key: bytes, webhook_id: str, body: bytes, skew: int, data: st.DataObject
) -> None:
    ts = NOW + skew
    other = data.draw(
        st.one_of(
            st.integers(min_value=NOW - TOLERANCE, max_value=NOW + TOLERANCE).map(str),  # still fresh
            st.integers(min_value=0, max_value=10**12).map(str),
            st.just("0" + str(ts)),  # the same number, spelt differently: the signed text differs
            st.text(max_size=20),
        )
    )
    assume(other != str(ts))
    headers = _headers(webhook_id, other, signatures.sign(key, webhook_id, ts, body))
    assert _refused(headers, body, [key])


@PROPERTY_SETTINGS
@given(key=keys, webhook_id=webhook_ids, body=bodies, other_body=bodies, skew=skews)
def test_any_change_to_the_body_is_refused(
    key: bytes, webhook_id: str, body: bytes, other_body: bytes, skew: int
) -> None:
    assume(other_body != body)
    ts = NOW + skew
    headers = _headers(webhook_id, str(ts), signatures.sign(key, webhook_id, ts, body))
    assert _refused(headers, other_body, [key])


@PROPERTY_SETTINGS
@given(key=keys, webhook_id=webhook_ids, body=bodies, skew=skews, data=st.data())
def test_any_change_to_the_signature_is_refused(
    key: bytes, webhook_id: str, body: bytes, skew: int, data: st.DataObject
) -> None:
    ts = NOW + skew
    mac = bytearray(base64.b64decode(signatures.sign(key, webhook_id, ts, body).removeprefix("v1,")))
    change = data.draw(st.sampled_from(["flip", "truncate", "extend", "replace"]))
    if change == "flip":
        position = data.draw(st.integers(0, len(mac) - 1))
        mac[position] ^= data.draw(st.integers(1, 255))
    elif change == "truncate":
        mac = mac[: data.draw(st.integers(0, len(mac) - 1))]
    elif change == "extend":
        mac += data.draw(st.binary(min_size=1, max_size=8))
    else:
        other = data.draw(st.binary(min_size=32, max_size=32))
        assume(other != bytes(mac))
        mac = bytearray(other)
    headers = _headers(webhook_id, str(ts), "v1," + base64.b64encode(bytes(mac)).decode())
    assert _refused(headers, body, [key])


@PROPERTY_SETTINGS
@given(key=keys, other=keys, webhook_id=webhook_ids, body=bodies)
def test_a_key_that_is_not_configured_is_refused(key: bytes, other: bytes, webhook_id: str, body: bytes) -> None:
    assume(other != key)
    headers = _headers(webhook_id, str(NOW), signatures.sign(other, webhook_id, NOW, body))
    assert _refused(headers, body, [key])


noise_entries = st.one_of(
    st.binary(min_size=32, max_size=32).map(lambda b: "v1," + base64.b64encode(b).decode()),
    st.binary(min_size=1, max_size=40).map(lambda b: "v2," + base64.b64encode(b).decode()),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=30),
)


@PROPERTY_SETTINGS
@given(
    key=keys,
    other_keys=st.lists(keys, max_size=4),
    noise=st.lists(noise_entries, max_size=6),
    webhook_id=webhook_ids,
    body=bodies,
    skew=skews,
    seed=st.integers(0, 2**32),
)
def test_one_valid_entry_among_several_under_one_key_among_several_is_enough(
    key: bytes,
    other_keys: list[bytes],
    noise: list[str],
    webhook_id: str,
    body: bytes,
    skew: int,
    seed: int,
) -> None:
    ts = NOW + skew
    shuffle = random.Random(seed).shuffle
    entries = [*noise, signatures.sign(key, webhook_id, ts, body)]
    shuffle(entries)
    key_list = [*other_keys, key]
    shuffle(key_list)
    headers = _headers(webhook_id, str(ts), " ".join(entries))
    assert _verify(headers, body, key_list) == webhook_id


header_values = st.one_of(
    st.text(max_size=100),
    st.text("0123456789", min_size=1, max_size=500),  # timestamps of any length
    st.integers().map(str),
    st.lists(noise_entries, max_size=4).map(" ".join),
)


@PROPERTY_SETTINGS
@given(
    headers=st.dictionaries(
        st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature", "other"]), header_values
    ),
    body=bodies,
    key_list=st.lists(keys, max_size=3),
)
@example(headers=_headers("msg", "9" * 400, "v1,AAAA"), body=b"", key_list=[b"k"])
def test_verify_answers_or_raises_signature_error_whatever_the_headers(
    headers: dict[str, str], body: bytes, key_list: list[bytes]
) -> None:
    with contextlib.suppress(errors.SignatureError):
        _verify(headers, body, key_list)


# --- output names ------------------------------------------------------------------------------

# A list: mypy reads the tuple ("Cs",) as tuple[str], not as a tuple of category names.
segment_text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="/"), max_size=40)
hostile_segments = st.one_of(
    st.sampled_from(["", ".", "..", "...", "\\", "..\\..", " ", "\t", "\x00", "\n", "~", "%2e%2e"]),
    segment_text,
)
source_names = st.one_of(
    st.text(max_size=300),
    st.lists(hostile_segments, max_size=12).map("/".join),
    st.tuples(st.text(min_size=1, max_size=3), st.integers(300, 1300)).map(lambda t: (t[0] * t[1])[: t[1]]),
    st.lists(st.sampled_from(["a", "é", "😀", "写", "..", "/"]), min_size=200, max_size=1100).map("".join),
)
prefix_segments = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="/\\"), min_size=1, max_size=30
).filter(lambda s: s not in (".", ".."))
prefixes = st.one_of(
    st.just(""),
    st.lists(prefix_segments, min_size=1, max_size=4).map(lambda segs: "/".join(segs) + "/"),
)


@PROPERTY_SETTINGS
@given(name=source_names, prefix=prefixes)
@example(name="a" * 2000, prefix="cutouts/")
@example(name="../../etc/passwd", prefix="")
@example(name="..\\..\\windows\\system32.jpg", prefix="p/")
@example(name="\x00\x01/.", prefix="")
def test_output_name_is_valid_and_inside_its_prefix(name: str, prefix: str) -> None:
    output = naming.output_name(name, prefix)

    assert len(output.encode()) <= naming.MAX_OBJECT_NAME_BYTES
    assert output.startswith(prefix)
    assert output.endswith(".png")
    rest = output[len(prefix) :]
    assert all(segment not in ("", ".", "..") for segment in rest.replace("\\", "/").split("/")), output
    assert not any(unicodedata.category(ch) == "Cc" for ch in output)
    assert naming.output_name(name, prefix) == output  # deterministic


@PROPERTY_SETTINGS
@given(
    head=st.text(st.characters(whitelist_categories=("L", "N")), min_size=1, max_size=50),
    a=st.text(max_size=40),
    b=st.text(max_size=40),
)
def test_long_names_that_share_a_head_get_different_outputs(head: str, a: str, b: str) -> None:
    assume(a != b)
    long_a, long_b = head * 1100 + a, head * 1100 + b
    assert naming.output_name(long_a, "p/") != naming.output_name(long_b, "p/")


def test_prefix_too_long_for_any_name_is_an_error_not_a_hang() -> None:
    with pytest.raises(ValueError, match="too long"):
        naming.output_name("a" * 2000, "p" * 1020 + "/")
