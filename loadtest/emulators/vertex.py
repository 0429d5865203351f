"""Emulated Google Vertex AI (Gemini and Claude publishers) with its own OAuth2 token endpoint,
written from Google's Vertex AI and OAuth2 service-account documentation and checked against
`anthropic.AnthropicVertex` and `google-genai` with `vertexai=True`.

Routes:

    POST /token          OAuth2 JWT-bearer grant (RFC 7523): `grant_type=urn:ietf:params:oauth:
                         grant-type:jwt-bearer&assertion=<RS256 JWT>` -> {"access_token", "expires_in",
                         "token_type"}.  The JWT must be signed by a registered service account's key
                         (`register_service_account`), name Google's token endpoint as `aud` (as
                         Google requires, whatever the file's token_uri), carry the cloud-platform
                         scope and be unexpired; else 400 invalid_grant as Google answers.
    POST /{v1,v1beta1}/projects/{p}/locations/{l}/publishers/google/models/{m}:generateContent
                                                   (and :streamGenerateContent?alt=sse)
    POST /{v1,v1beta1}/projects/{p}/locations/{l}/publishers/google/models/{m}:predict   (embeddings)
    POST /{v1,v1beta1}/projects/{p}/locations/{l}/publishers/anthropic/models/{m}:rawPredict
                                                   (and :streamRawPredict)

Every model route needs `Authorization: Bearer <token>` with a token this emulator issued and that
has not expired (else 401 UNAUTHENTICATED in Google's format), as Vertex checks.  Gemini requests
are answered by the Gemini emulator; Claude requests by the Anthropic emulator after Vertex's own
checks: `anthropic_version` in the body, no `model` in the body (it is in the URL), `"stream": true`
exactly for streamRawPredict; `publishers/anthropic/models/count-tokens:rawPredict` counts tokens
for the model named in its body.  As on Vertex, 401/403/429 come in Google's format for both
publishers; Claude's other errors (400, 500, 529) in Anthropic's.  Scenarios (behaviour.py) come from
the model in the URL (`claude-x::tools`, URL-encoded or not) or the x-emulate header.
"""

from __future__ import annotations

import base64
import itertools
import json
import random
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from . import anthropic, gemini
from .behaviour import LatencyProfile, behaviour_for, count_tokens, unit_vector

ACCOUNTS = web.AppKey("vertex_accounts", dict)  # client_email -> RSA public key
TOKENS = web.AppKey("vertex_tokens", dict)  # access token -> expiry (epoch seconds)
SETTINGS = web.AppKey("vertex_settings", dict)  # token_ttl; grants (how many tokens were issued)

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
AUDIENCE = "https://oauth2.googleapis.com/token"  # the `aud` Google requires, whatever the token_uri
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
MAX_TOKENS_KEPT = 10_000
DEFAULT_DIMENSIONS = 16
DEMO_EMAIL = "gateway@demo-project.iam.gserviceaccount.com"
DEMO_PROJECT = "demo-project"
GOOGLE_STATUSES = (401, 403, 429)  # answered by Vertex itself, in Google's format, for every publisher
NO_TOKEN = ("Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
            "other valid authentication credential.")


def register_service_account(app: web.Application, client_email: str, public_key_pem: bytes) -> None:
    """Trust JWTs signed by this service account's key (tests and the demo generate the key)."""
    app[ACCOUNTS][client_email] = serialization.load_pem_public_key(public_key_pem)


def new_service_account(directory: Path, token_uri: str, email: str = DEMO_EMAIL) -> tuple[Path, bytes]:
    """Write a service-account JSON file with a fresh RSA key (as the Cloud console hands them out,
    with `token_uri` pointing where tokens are to be fetched); return its path and public key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    path = directory / f"{email.split('@')[0]}-sa.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": DEMO_PROJECT, "private_key_id": secrets.token_hex(8),
        "private_key": private, "client_email": email, "client_id": str(secrets.randbelow(10**20)),
        "token_uri": token_uri, "auth_uri": "https://accounts.google.com/o/oauth2/auth",
    }))
    path.chmod(0o600)
    return path, public


def demo_credentials(app: web.Application, url: str, directory: Path) -> dict[str, str]:
    """For `llm-proxy demo`: a service account this running emulator trusts; the backend keys that use it."""
    path, public = new_service_account(directory, url + "/token")
    register_service_account(app, DEMO_EMAIL, public)
    return {"credentials": str(path), "project": DEMO_PROJECT}


# --------------------------------------------------------------------------------------------------
# Token endpoint


def _b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _grant_error(description: str) -> web.Response:
    return web.json_response({"error": "invalid_grant", "error_description": description}, status=400)


def _check_assertion(app: web.Application, assertion: str) -> str | None:
    """Why the JWT is refused, or None."""
    try:
        head, payload, signature = assertion.split(".")
        header, claims = json.loads(_b64url(head)), json.loads(_b64url(payload))
        sig = _b64url(signature)
    except ValueError:
        return "Invalid JWT: not a JWS compact serialization."
    if not isinstance(header, dict) or not isinstance(claims, dict) or header.get("alg") != "RS256":
        return "Invalid JWT: expected an RS256-signed claim set."
    key = app[ACCOUNTS].get(claims.get("iss"))
    if key is None:
        return "Invalid JWT Signature."  # Google's wording for an unknown or deleted key too
    try:
        key.verify(sig, f"{head}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return "Invalid JWT Signature."
    now = time.time()
    if claims.get("aud") != AUDIENCE:
        return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe."
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, (int, float)) or not isinstance(iat, (int, float)) or exp < now or iat > now + 300 or exp - iat > 3600:
        return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe."
    if SCOPE not in str(claims.get("scope", "")).split():
        return "Invalid OAuth scope or ID token audience provided."
    return None


async def token(request: web.Request) -> web.Response:
    form = parse_qs((await request.read()).decode("utf-8", "replace"))
    if form.get("grant_type") != [JWT_GRANT] or len(form.get("assertion", [])) != 1:
        return web.json_response({"error": "unsupported_grant_type", "error_description": "Invalid grant_type."}, status=400)
    why = _check_assertion(request.app, form["assertion"][0])
    if why is not None:
        return _grant_error(why)
    tokens, settings = request.app[TOKENS], request.app[SETTINGS]
    if len(tokens) >= MAX_TOKENS_KEPT:
        for old in list(itertools.islice(tokens, len(tokens) // 2)):
            del tokens[old]
    access = "ya29.emu-" + secrets.token_urlsafe(24)
    tokens[access] = time.time() + settings["token_ttl"]
    settings["grants"] += 1
    return web.json_response({"access_token": access, "expires_in": settings["token_ttl"], "token_type": "Bearer"})


# --------------------------------------------------------------------------------------------------
# Model routes


def _authorised(request: web.Request) -> bool:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    expiry = request.app[TOKENS].get(value) if scheme.lower() == "bearer" else None
    return expiry is not None and expiry > time.time()


async def _claude(request: web.Request, model: str, action: str, body: dict[str, Any]) -> web.StreamResponse:
    if not body.get("anthropic_version"):
        return anthropic.error_response(400, "anthropic_version: Field required")
    if model == "count-tokens" and action == "rawPredict":  # the one place the model is in the body
        return await anthropic.count_answer(request, {k: v for k, v in body.items() if k != "anthropic_version"})
    if "model" in body:
        return anthropic.error_response(400, "model: Extra inputs are not permitted")
    if bool(body.get("stream")) != (action == "streamRawPredict"):
        return anthropic.error_response(400, f"stream: must be {'true' if action == 'streamRawPredict' else 'false'} for :{action}")
    return await anthropic.answer(request, {**body, "model": model})


def _predict_embeddings(body: dict[str, Any]) -> web.Response:
    """`:predict` for text embedding models: one prediction per instance `{"content": text}`."""
    instances = body.get("instances")
    if not isinstance(instances, list) or not instances or not all(
            isinstance(i, dict) and isinstance(i.get("content"), str) for i in instances):
        return gemini.error_response(400, "Invalid instances: each instance needs a `content` string.")
    dims = int((body.get("parameters") or {}).get("outputDimensionality") or DEFAULT_DIMENSIONS)
    return web.json_response({"predictions": [
        {"embeddings": {"values": unit_vector(i["content"], dims),
                        "statistics": {"token_count": count_tokens(i["content"]), "truncated": False}}}
        for i in instances]})


async def predict(request: web.Request) -> web.StreamResponse:
    if not _authorised(request):
        return gemini.error_response(401, NO_TOKEN)
    model, _, action = unquote(request.match_info["target"]).rpartition(":")
    publisher = request.match_info["publisher"]
    body, bad = await gemini.read_body(request)
    if bad is not None:
        return bad
    assert body is not None
    b = behaviour_for(model, request.headers)
    if b.status in GOOGLE_STATUSES:
        return gemini.error_response(b.status, f"emulated error {b.status}", b.retry_after)
    if publisher == "google" and action in ("generateContent", "streamGenerateContent", "countTokens"):
        return await gemini.answer(request, model, action, body)
    if publisher == "google" and action == "predict":
        return _predict_embeddings(body)
    if publisher == "anthropic" and action in ("rawPredict", "streamRawPredict"):
        return await _claude(request, model, action, body)
    return gemini.error_response(404, f"Publisher model `publishers/{publisher}/models/{model}` does not support :{action}.")


def create_app(profile: LatencyProfile | None = None) -> web.Application:
    app = web.Application()
    app[ACCOUNTS] = {}
    app[TOKENS] = {}
    app[SETTINGS] = {"token_ttl": 3600, "grants": 0}
    # The publishers' answers come from the Gemini and Anthropic emulators, which read these keys.
    for module in (gemini, anthropic):
        app[module.PROFILE] = profile or LatencyProfile()
        app[module.RNG] = random.Random(0)
    app.router.add_post("/token", token)
    for version in ("v1", "v1beta1"):
        app.router.add_post(f"/{version}/projects/{{project}}/locations/{{location}}/publishers/{{publisher}}/models/{{target}}",
                            predict)
    return app
