"""Checking an AWS Signature Version 4 as AWS does, written from AWS's SigV4 specification
("Create a signed AWS API request") with hashlib/hmac only -- deliberately not botocore, which the
gateway signs with, so that the two can disagree.

The canonical request uses the path bytes *as received* (already percent-encoded), encoded once
more (every service but S3), so a client that signs `v1:0` but sends `v1%3A0` -- or the reverse --
fails here exactly as it fails at AWS.  Errors are AWS's: 403 with `x-amzn-ErrorType` and
`{"message": ...}`, the exception names and wordings AWS uses.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qsl, quote

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = timedelta(minutes=15)
BAD_SIGNATURE = (
    "The request signature we calculated does not match the signature you provided. Check your AWS "
    "Secret Access Key and signing method. Consult the service documentation for details."
)
UNKNOWN_KEY = "The security token included in the request is invalid."
MISSING = "Missing Authentication Token"


@dataclass(frozen=True)
class SigV4Error(Exception):
    status: int
    error_type: str  # AWS's exception name, sent in x-amzn-ErrorType
    message: str


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    k = _hmac(("AWS4" + secret).encode(), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


def canonical_query(query: str) -> str:
    pairs = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in parse_qsl(query, keep_blank_values=True))
    return "&".join(f"{k}={v}" for k, v in pairs)


def _parse_authorization(value: str) -> dict[str, str]:
    if not value.startswith(ALGORITHM + " "):
        raise SigV4Error(403, "IncompleteSignatureException", f"Unsupported authorization type: {value.split(' ')[0]}")
    fields = {}
    for part in value[len(ALGORITHM) + 1:].split(","):
        key, sep, val = part.strip().partition("=")
        if not sep:
            raise SigV4Error(403, "IncompleteSignatureException", f"Authorization header requires '=' in '{part.strip()}'")
        fields[key] = val
    for key in ("Credential", "SignedHeaders", "Signature"):
        if key not in fields:
            raise SigV4Error(403, "IncompleteSignatureException", f"Authorization header requires '{key}' parameter.")
    return fields


def verify(method: str, raw_path: str, headers, body: bytes, secrets: dict[str, str], service: str,
           now: datetime | None = None, tokens: dict[str, str] | None = None) -> str:
    """Check the request's signature; return the region it was signed for, or raise SigV4Error.

    `raw_path` is the request target as received (path and query, percent-encoding intact);
    `headers` a case-insensitive mapping; `secrets` access key id -> secret key; `tokens` the session
    token that must accompany a temporary access key id.
    """
    auth = headers.get("Authorization")
    if not auth:
        raise SigV4Error(403, "MissingAuthenticationTokenException", MISSING)
    fields = _parse_authorization(auth)
    cred = fields["Credential"].split("/")
    if len(cred) != 5 or cred[4] != "aws4_request":
        raise SigV4Error(403, "IncompleteSignatureException", "Credential should be scoped to a valid region.")
    key_id, date, region, signed_service, _ = cred
    if key_id not in secrets:
        raise SigV4Error(403, "UnrecognizedClientException", UNKNOWN_KEY)
    if signed_service != service:
        raise SigV4Error(403, "InvalidSignatureException",
                         f"Credential should be scoped to correct service: '{service}'.")
    amz_date = headers.get("X-Amz-Date", "")
    try:
        when = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        raise SigV4Error(403, "IncompleteSignatureException", "Authorization header requires existence of either a "
                         "'X-Amz-Date' or a 'Date' header.") from None
    if abs((now or datetime.now(timezone.utc)) - when) > MAX_SKEW:
        raise SigV4Error(403, "InvalidSignatureException", "Signature expired: the request time is too skewed.")
    if not amz_date.startswith(date):
        raise SigV4Error(403, "InvalidSignatureException", "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP.")
    signed = fields["SignedHeaders"].split(";")
    if "host" not in signed:
        raise SigV4Error(403, "InvalidSignatureException", "'Host' must be a 'SignedHeader' in the AWS Authorization.")
    token = headers.get("X-Amz-Security-Token")
    expected_token = (tokens or {}).get(key_id)
    if token is not None and not token:
        raise SigV4Error(403, "UnrecognizedClientException", UNKNOWN_KEY)  # AWS refuses an empty token
    if expected_token is not None and (token != expected_token or "x-amz-security-token" not in signed):
        raise SigV4Error(403, "UnrecognizedClientException", UNKNOWN_KEY)
    path, _, query = raw_path.partition("?")
    canonical_headers = "".join(f"{name}:{' '.join((headers.get(name) or '').split())}\n" for name in signed)
    canonical = "\n".join((
        method.upper(),
        quote(path, safe="/~"),  # the received bytes, encoded once more
        canonical_query(query),
        canonical_headers,
        fields["SignedHeaders"],
        hashlib.sha256(body).hexdigest(),
    ))
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join((ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()))
    expected = hmac.new(signing_key(secrets[key_id], date, region, service), to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, fields["Signature"]):
        raise SigV4Error(403, "InvalidSignatureException", BAD_SIGNATURE)
    return region
