"""Every backend: a model name (client text on a wildcard route) never steers the upstream URL.

For each provider (and each URL style), hostile model names are put through every request builder
(chat, stream, embeddings, pass-through).  Each request must either be refused with a 400, or go to
the configured origin, under the configured prefix, with the configured query, the model occupying
whole path segments that decode back to it -- checked with yarl, the URL parser aiohttp sends with,
so a dot segment it would resolve (climbing out of the prefix with the backend key) is caught.
Mirrors `adapters.common.path_segment` / `url_origin` and the URL builders of every backend.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import pytest
from yarl import URL

from adapters import chat_templates, ir, jsonio, registry
from adapters.base import Target
from adapters.common import path_segment, url_origin
from adapters.openai_backend import PRESET_PROVIDERS
from adapters.errors import ProxyError

BASE = "http://backend.test:8080/prefix"
SAFE = "SAFEMODEL"

HOSTILE = [
    "..", ".", "", "%2e%2e", "%2E%2E/x", "?", "#", "@", "//", "\\", "..\\..\\admin",
    "../../admin?x=1", "a/../../admin", "x?key=steal", "x#frag", "user@evil.example", "//evil.example/x",
    "%2F..%2F", "a\r\nHost: evil", "a\x00b", "a\x01", "a\x7f", "x:streamGenerateContent?alt=sse",
    "a b", "é/ü", "a/b", "a/b/c", "./x", "x/.",
]

# provider -> option variants (each a distinct URL style)
VARIANTS: list[tuple[str, dict]] = [
    (p, {}) for p in registry.PROVIDERS if p not in ("azure", "huggingface", "vertex")
] + [(p, {}) for p in PRESET_PROVIDERS] + [
    ("vertex", {"project": "p"}), ("vertex", {"project": "p", "location": "global"}),
    ("azure", {"api_style": "deployments"}), ("azure", {"api_style": "v1"}), ("azure", {"api_style": "models"}),
    ("huggingface", {"endpoint_style": "serverless"}), ("huggingface", {"endpoint_style": "endpoint"}),
]

CHAT = ir.ChatRequest(model="client", messages=[ir.Message("user", [ir.Text("hi")])], max_tokens=8)
EMBED_BODY = {"input": ["hi"]}


REQUIRED_OPTIONS = {"bedrock": {"region": "us-east-1"}}  # providers whose Options have required keys


def make(provider: str, options: dict):
    cls = registry.provider_class(provider)
    return cls(BASE, "BACKEND-KEY", {}, cls.Options(**REQUIRED_OPTIONS.get(provider, {}), **options))


def target(model: str) -> Target:
    return Target(model=model, chat_template=chat_templates.get("chatml"), default_max_tokens=8)


def urls_for(backend, model: str) -> list[str]:
    """The URL of every request this backend builds for `model` (chat, stream, embeddings, pass-through)."""
    t = target(model)
    out = [backend.chat_request(CHAT, t).url,
           backend.chat_request(ir.ChatRequest(**{**_fields(CHAT), "stream": True}), t).url]
    try:
        embed = backend.embeddings_request(ir.EmbeddingRequest(model="client", input=["hi"]), t)
        out += [r.url for r in embed] if isinstance(embed, list) else [embed.url]  # Bedrock Titan: a list
    except ProxyError as err:
        assert err.kind == "unsupported"
    for op in _passthrough_ops(backend):
        out.append(backend.passthrough_request(op, jsonio.dumps({"model": model}), False, t, {}).url)
        out.append(backend.passthrough_request(op, jsonio.dumps({"model": model}), True, t, {}).url)
    return out


def _fields(req: ir.ChatRequest) -> dict:
    return {f: getattr(req, f) for f in req.__struct_fields__}


def _passthrough_ops(backend) -> tuple[str, ...]:
    return {"openai": ("chat", "completions", "embeddings"), "anthropic": ("messages", "count_tokens"),
            "gemini": ("generate", "count_tokens", "embed", "batch_embed")}.get(backend.family or "", ())


def outcome(backend, model: str):
    try:
        return urls_for(backend, model)
    except ProxyError as err:
        assert err.kind == "invalid_request" and err.status == 400, (model, err.kind, err.message)
        return None


def _models_for(provider: str, hostile: str) -> list[str]:
    """Replicate and Hugging Face names have an owner part: also try the hostile text in each part."""
    if provider in ("replicate", "huggingface"):
        return [hostile, f"own/{hostile}", f"{hostile}/name"]
    return [hostile]


def benign_for(model: str) -> str:
    """A harmless name of the same shape (as many `/`-separated parts, outside Replicate's version form)."""
    return "/".join(f"{SAFE}{i}" for i in range(model.count("/") + 1))


def _segments(raw_path: str) -> list[str]:
    return [unquote(s) for s in raw_path.split("/")]


def assert_confined(url: str, benign: str, model: str) -> None:
    parsed, ref = URL(url), URL(benign)
    # What aiohttp sends is what was built (yarl may only re-spell a harmless escape such as %40):
    # no dot segment resolved, no segment split or merged, nothing re-read as a query.
    assert _segments(parsed.raw_path) == _segments(urlsplit(url).path), url
    assert (parsed.scheme, parsed.host, parsed.port) == ("http", "backend.test", 8080), url
    assert parsed.raw_query_string == ref.raw_query_string and not parsed.fragment, url
    assert parsed.raw_path == "/prefix" or parsed.raw_path.startswith("/prefix/"), url
    if SAFE not in ref.raw_path:
        assert parsed.raw_path == ref.raw_path, url  # the model is in the body, not in the URL
        return
    # The model is in the path: the segments around it are the benign URL's, the rest decodes to it.
    got, exp = parsed.raw_path.split("/"), ref.raw_path.split("/")
    first = next(k for k, seg in enumerate(exp) if SAFE in seg)
    tail = len(exp) - max(k for k, seg in enumerate(exp) if SAFE in seg) - 1
    assert got[:first] == exp[:first] and got[len(got) - tail:] == exp[len(exp) - tail:], (url, benign)
    middle = got[first:len(got) - tail]
    assert all(s not in ("", ".", "..") for s in middle), url
    before = exp[first].partition(SAFE)[0]
    after = exp[len(exp) - tail - 1].rpartition(SAFE)[2][1:]  # past the part's digit
    assert "/".join(unquote(s) for s in middle) == before + model + after, (url, model)


@pytest.mark.parametrize("provider, options", VARIANTS, ids=[f"{p}-{'-'.join(o.values()) or 'default'}" for p, o in VARIANTS])
@pytest.mark.parametrize("hostile", HOSTILE, ids=repr)
def test_model_name_cannot_steer_the_url(provider, options, hostile):
    backend = make(provider, options)
    for model in _models_for(provider, hostile):
        urls = outcome(backend, model)
        if urls is None:
            continue
        if provider == "replicate" and ":" in model.partition("/")[2]:
            # "owner/name:version": the version goes in the body, the URL is the fixed create path
            assert set(urls) == {f"{BASE}/v1/predictions"}
            continue
        refs = urls_for(backend, benign_for(model))
        assert len(urls) == len(refs)
        for url, ref in zip(urls, refs):
            assert_confined(url, ref, model)


def test_traversal_reproduction_from_the_issue():
    """`hf/../../admin?x=1` on a wildcard made the backend get `POST /admin?x=1` with its key."""
    hf = make("huggingface", {})
    with pytest.raises(ProxyError) as err:
        hf.chat_request(CHAT, target("../../admin?x=1"))
    assert err.value.status == 400 and err.value.param == "model"
    url = URL(hf.chat_request(CHAT, target("org/x?y=1#z")).url)
    assert url.path == "/prefix/models/org/x?y=1#z" and not url.query and not url.fragment
    az = make("azure", {"api_style": "deployments"})
    with pytest.raises(ProxyError):
        az.chat_request(CHAT, target(".."))
    rep = make("replicate", {})
    with pytest.raises(ProxyError):
        rep.chat_request(CHAT, target("../.."))


@pytest.mark.parametrize("value, encoded", [
    ("gpt-4o", "gpt-4o"), ("a/b", "a%2Fb"), ("%2e%2e", "%252e%252e"), ("a?b#c@d", "a%3Fb%23c%40d"),
    ("a\\b", "a%5Cb"), ("a\r\n", "a%0D%0A"), ("...", "..."), ("é", "%C3%A9"),
])
def test_path_segment_encodes_every_reserved_character(value, encoded):
    assert path_segment(value) == encoded


@pytest.mark.parametrize("value", ["", ".", ".."])
def test_path_segment_refuses_dot_segments(value):
    with pytest.raises(ProxyError) as err:
        path_segment(value)
    assert err.value.status == 400 and err.value.param == "model"


@pytest.mark.parametrize("url, origin", [
    ("https://api.replicate.com/v1/x", ("https", "api.replicate.com", 443)),
    ("https://API.Replicate.com:443/x", ("https", "api.replicate.com", 443)),
    ("http://127.0.0.1:8080/p", ("http", "127.0.0.1", 8080)),
    ("https://user@evil.example/x", None), ("https://api.replicate.com\\@evil.example/", None),
    ("https://evil.example\t/x", None), ("https://xn--pi-ioa.replicate.com/x", ("https", "xn--pi-ioa.replicate.com", 443)),
    ("https://\uff41pi.replicate.com/x", None), ("ftp://x.example/", None), ("//x.example/a", None),
    ("http://h:99999/", None), ("https://a.example /x", None),
])
def test_url_origin(url, origin):
    assert url_origin(url) == origin
