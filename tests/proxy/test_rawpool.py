"""proxy/rawpool.py over real sockets: keep-alive reuse (counted), the bound on connections, a stale
keep-alive connection retried once and nothing else retried, connect / first-byte deadlines,
cancellation closing the connection, TLS verified like aiohttp's default, and the request's bytes."""

from __future__ import annotations

import asyncio
import datetime
import ssl

import aiohttp
import pytest
from aiohttp import web

from adapters.errors import ProxyError
from proxy.dnscache import DnsCache
from proxy.rawpool import RawClient
from proxy.upstream_client import ConnectFailed, ConnectionBroken, ConnectTimeout
from tests.conftest import proxy_url
from tests.proxy.test_upstream import _closed_port


def deadline(seconds: float = 5.0) -> float:
    return asyncio.get_running_loop().time() + seconds


async def get(client: RawClient, url: str, body: bytes | None = None, headers=None) -> tuple[int, bytes]:
    resp = await client.request("POST" if body is not None else "GET", url, headers or {}, body, deadline())
    try:
        return resp.status, await resp.read(deadline(), 1 << 20)
    finally:
        resp.release()


@pytest.fixture
async def client():
    clients: list[RawClient] = []

    def make(max_connections: int = 8, connect_timeout: float = 2.0, **kw) -> RawClient:
        clients.append(RawClient(max_connections, connect_timeout, **kw))
        return clients[-1]

    yield make
    for c in clients:
        await c.close()


class Scripted:
    """A raw TCP server: `answer(n, reader, writer)` handles the n-th request (0-based, across
    connections) after its request head was read; counts connections and requests."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/x"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                n = self.requests
                self.requests += 1
                if not await self.answer(n, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def scripted():
    servers: list[Scripted] = []

    async def start(answer) -> tuple[str, Scripted]:
        servers.append(Scripted(answer))
        return await servers[-1].start(), servers[-1]

    yield start
    for s in servers:
        await s.close()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def reply(writer: asyncio.StreamWriter, data: bytes = OK, keep: bool = True) -> bool:
    writer.write(data)
    await writer.drain()
    return keep


async def plain(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def counting_app(aiohttp_server, handler=None):
    """An aiohttp server answering "ok", recording each request's connection and the peak in flight."""
    seen = {"connections": set(), "in_flight": 0, "peak": 0, "heads": []}

    async def handle(request: web.Request) -> web.StreamResponse:
        seen["connections"].add(request.transport.get_extra_info("peername"))
        seen["heads"].append((request.raw_path, dict(request.headers), await request.read()))
        seen["in_flight"] += 1
        seen["peak"] = max(seen["peak"], seen["in_flight"])
        try:
            return await (handler or plain)(request)
        finally:
            seen["in_flight"] -= 1

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = await aiohttp_server(app)
    return str(server.make_url("/")), seen


async def test_keep_alive_reuses_one_connection(aiohttp_server, client):
    base, seen = await counting_app(aiohttp_server)
    c = client()
    for _ in range(5):
        assert await get(c, base + "v1/x", b"{}") == (200, b"ok")
    assert len(seen["connections"]) == 1 and c.opened == 1
    assert (c.in_use(), c.idle()) == (0, 1)


async def test_connection_close_from_the_server(aiohttp_server, client):
    async def closing(request):
        resp = web.Response(text="ok")
        resp.force_close()
        return resp

    base, seen = await counting_app(aiohttp_server, closing)
    c = client()
    for _ in range(3):
        assert await get(c, base, b"{}") == (200, b"ok")
    assert len(seen["connections"]) == 3 and c.opened == 3 and c.idle() == 0


async def test_an_idle_connection_the_server_closed_is_not_used(scripted, client):
    async def answer_then_hang_up(n, writer):
        return await reply(writer, keep=False)  # closes the connection, without having said so

    url, server = await scripted(answer_then_hang_up)
    c = client()
    assert await get(c, url) == (200, b"ok")
    for _ in range(100):
        if not c.idle():
            break
        await asyncio.sleep(0.01)
    assert c.idle() == 0  # left the pool as soon as the server closed it
    assert await get(c, url) == (200, b"ok")
    assert (server.connections, server.requests, c.opened) == (2, 2, 2)


async def test_a_stale_keep_alive_connection_is_retried_once_on_a_new_one(scripted, client):
    """The second request on the first connection is read, then the server closes without a byte:
    sent again on a new connection.  The request was reused, written, and had no answer at all."""
    async def first_only(n, writer):
        return n != 1 and await reply(writer)

    url, server = await scripted(first_only)
    c = client()
    assert await get(c, url, b"{}") == (200, b"ok")
    assert await get(c, url, b"{}") == (200, b"ok")
    assert (server.connections, server.requests, c.opened) == (2, 3, 2)


@pytest.mark.parametrize("first", [b"", b"HTTP/1.1 200 OK\r\nContent-Le"])
async def test_nothing_else_is_retried(scripted, client, first):
    """A fresh connection closed before an answer, or a reused one closed mid-answer: an error, once."""
    async def broken(n, writer):
        return await reply(writer) if n == 0 and first else await reply(writer, first, keep=False)

    url, server = await scripted(broken)
    c = client()
    if first:
        assert await get(c, url, b"{}") == (200, b"ok")
    with pytest.raises(ConnectionBroken):
        await get(c, url, b"{}")
    assert server.requests == (2 if first else 1)
    assert (c.in_use(), c.idle()) == (0, 0)


async def test_connect_failures(client):
    with pytest.raises(ConnectFailed):
        await get(client(), f"http://127.0.0.1:{_closed_port()}/")
    with pytest.raises(ConnectFailed):
        await get(client(), "ftp://127.0.0.1/")


class Resolver:
    """getaddrinfo's stand-in: `answers` for any name, every lookup counted."""

    def __init__(self, *addresses: tuple[str, int]) -> None:
        self.answers = [(2, 1, 6, "", address) for address in addresses]
        self.lookups: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int, *, type: int) -> list:
        self.lookups.append((host, port))
        return self.answers


async def test_addresses_are_cached_and_the_next_one_tried_when_one_refuses(aiohttp_server, client):
    async def closing(request):
        resp = web.Response(text="ok")
        resp.force_close()  # each request opens a new connection
        return resp

    base, seen = await counting_app(aiohttp_server, closing)
    port = int(base.rsplit(":", 1)[1].strip("/"))
    c = client()
    dns = c._dns = DnsCache(Resolver(("127.0.0.1", _closed_port()), ("127.0.0.1", port)))
    for _ in range(3):
        assert await get(c, f"http://backend.test:{port}/") == (200, b"ok")
    assert dns._resolve.lookups == [("backend.test", port)] and c.opened == 3 and len(seen["connections"]) == 3


async def test_a_host_none_of_whose_addresses_answers_is_looked_up_again(client):
    c = client()
    dns = c._dns = DnsCache(Resolver(("127.0.0.1", _closed_port()), ("127.0.0.1", _closed_port())))
    for _ in range(2):
        with pytest.raises(ConnectFailed):
            await get(c, "http://backend.test:81/")
    assert dns._resolve.lookups == [("backend.test", 81)] * 2 and len(dns) == 0 and c.in_use() == 0


async def test_the_lookup_has_the_connect_deadline(client):
    async def never(host, port, *, type):
        await asyncio.sleep(10)

    c = client(connect_timeout=0.05)
    c._dns = DnsCache(never)
    with pytest.raises(ConnectTimeout):
        await get(c, "http://backend.test:81/")
    assert c.in_use() == 0


async def test_connect_timeout_covers_the_tls_handshake(client):
    """A server that accepts TCP but never answers the TLS handshake."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    c = client(connect_timeout=0.2)
    try:
        with pytest.raises(ConnectTimeout):
            await get(c, f"https://127.0.0.1:{port}/")
        # the request's own deadline comes first: that is the caller's (first byte) timeout
        with pytest.raises(TimeoutError):
            await c.request("GET", f"https://127.0.0.1:{port}/", {}, None, deadline(0.1))
        assert (c.in_use(), c.opened) == (0, 0)
    finally:
        server.close()


async def test_first_byte_deadline(scripted, client):
    async def silent(n, writer):
        await asyncio.sleep(5)
        return False

    url, _ = await scripted(silent)
    c = client()
    with pytest.raises(TimeoutError):
        await c.request("POST", url, {}, b"{}", deadline(0.1))
    assert (c.in_use(), c.idle()) == (0, 0)


async def slow_stream(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    await resp.prepare(request)
    for i in range(100):
        await resp.write(b"data: %d\n\n" % i)
        await asyncio.sleep(0.01)
    return resp


@pytest.mark.parametrize("where", ["headers", "body"])
async def test_cancellation_closes_the_connection(aiohttp_server, client, where):
    async def handler(request):
        if where == "headers":
            await asyncio.sleep(5)
        return await slow_stream(request)

    base, seen = await counting_app(aiohttp_server, handler)
    c = client()

    async def reader():
        resp = await c.request("GET", base, {}, None, deadline())
        try:
            while await resp.chunk(deadline()):
                pass
        finally:
            resp.release()

    task = asyncio.ensure_future(reader())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (c.in_use(), c.idle()) == (0, 0)  # not given back dirty: closed
    for _ in range(100):
        if not seen["in_flight"]:
            break
        await asyncio.sleep(0.02)
    assert seen["in_flight"] == 0  # the server saw the connection go


async def test_max_connections_bounds_connections_and_queues_the_rest(aiohttp_server, client):
    async def slow(request):
        await asyncio.sleep(0.05)
        return web.Response(text="ok")

    base, seen = await counting_app(aiohttp_server, slow)
    c = client(max_connections=2)
    results = await asyncio.gather(*(get(c, base, b"{}") for _ in range(6)))
    assert results == [(200, b"ok")] * 6
    assert seen["peak"] == 2 and len(seen["connections"]) == 2 and c.opened == 2


async def test_waiting_for_a_connection_has_the_request_deadline(aiohttp_server, client):
    base, _ = await counting_app(aiohttp_server, slow_stream)
    c = client(max_connections=1)
    held = await c.request("GET", base, {}, None, deadline())
    try:
        with pytest.raises(TimeoutError):
            await c.request("GET", base, {}, None, deadline(0.1))
    finally:
        held.release()
    assert (c.in_use(), c.idle()) == (0, 0)  # released mid-body: closed, its slot free


async def test_the_request_bytes(aiohttp_server, client):
    base, seen = await counting_app(aiohttp_server)
    c = client()
    await get(c, base + "v1/models/a%3Ab:gen?alt=sse", b'{"a":1}',
              {"Authorization": "Bearer k", "Content-Length": "999", "X-Custom": "v"})
    await get(c, base + "v1/x", b"{}", {"content-type": "application/json", "accept-encoding": "identity"})
    (path, headers, body), (_, headers2, _) = seen["heads"]
    assert path == "/v1/models/a%3Ab:gen?alt=sse" and body == b'{"a":1}'  # the path's bytes as given
    assert headers["Host"] == base.split("/")[2] and headers["Content-Length"] == "7"
    assert headers["Authorization"] == "Bearer k" and headers["X-Custom"] == "v"
    assert headers["Content-Type"] == "application/octet-stream" and headers["Accept-Encoding"] == "gzip, deflate"
    assert headers2["Content-Type"] == "application/json" and headers2["Accept-Encoding"] == "identity"


@pytest.mark.parametrize("headers", [{"X-A": "v\r\nX-Injected: 1"}, {"X-A": "v\n"}, {"X A": "v"}, {"X-A:": "v"}])
async def test_header_injection_is_refused(aiohttp_server, client, headers):
    base, seen = await counting_app(aiohttp_server)
    with pytest.raises(ProxyError):
        await get(client(), base, b"{}", headers)
    assert seen["heads"] == []


async def test_a_path_that_would_break_the_request_line_is_refused(client):
    with pytest.raises(ProxyError):
        await get(client(), "http://127.0.0.1:9/a b")


async def test_streams_from_an_emulator(start_emulator, client):
    base = await start_emulator("openai")
    c = client()
    resp = await c.request("POST", base + "/v1/chat/completions", {"Content-Type": "application/json"},
                           b'{"model": "m::chunks=30,chunk_delay=0.005", "stream": true, "messages": [{"role": "user", "content": "x"}]}',
                           deadline())
    chunks = []
    try:
        while chunk := await resp.chunk(deadline()):
            chunks.append(chunk)
    finally:
        resp.release()
    body = b"".join(chunks)
    assert resp.status == 200 and body.count(b"data: ") >= 5 and body.endswith(b"data: [DONE]\n\n")
    assert len(chunks) > 1 and c.idle() == 1  # handed over as they came; read to the end: kept alive


# --------------------------------------------------------------------------------------------------
# TLS


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for `localhost` only (not 127.0.0.1): (cert file, key file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    d = tmp_path_factory.mktemp("tls")
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return str(d / "cert.pem"), str(d / "key.pem")


@pytest.fixture
async def tls_server(aiohttp_server, certificate):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    app = web.Application()
    peers = set()

    async def handle(request):
        peers.add(request.transport.get_extra_info("peername"))
        return web.Response(text="secure")

    app.router.add_route("*", "/{tail:.*}", handle)
    server = await aiohttp_server(app, ssl=context)
    return server.port, peers


async def test_tls_verified_with_the_configured_trust_store(tls_server, certificate, client, monkeypatch):
    port, peers = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", certificate[0])  # the system store, as OpenSSL reads it
    c = client()
    for _ in range(3):
        assert await get(c, f"https://localhost:{port}/v1") == (200, b"secure")
    assert len(peers) == 1 and c.opened == 1  # kept alive over TLS


async def test_tls_refuses_an_untrusted_certificate(tls_server, client):
    port, peers = tls_server
    with pytest.raises(ConnectFailed):
        await get(client(), f"https://localhost:{port}/v1")
    assert not peers


async def test_tls_refuses_a_certificate_for_another_name(tls_server, certificate, client, monkeypatch):
    port, peers = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", certificate[0])
    with pytest.raises(ConnectFailed):
        await get(client(), f"https://127.0.0.1:{port}/v1")
    assert not peers


async def test_an_https_backend_through_the_gateway(tls_server, certificate, start_proxy, monkeypatch):
    """The default client on an https base_url: verified against the trust store OpenSSL reads;
    an untrusted certificate is a 502 that names neither host nor port."""
    port, peers = tls_server
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    config = {"backends": {"b": {"provider": "openai", "base_url": f"https://localhost:{port}/v1"}},
              "models": [{"name": "m", "backend": "b"}]}
    untrusted = await start_proxy(config)
    monkeypatch.setenv("SSL_CERT_FILE", certificate[0])
    trusted = await start_proxy(config)
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy_url(untrusted, "/v1/chat/completions"), json=body) as r:
            assert r.status == 502
            message = (await r.json())["error"]["message"]
            assert message == "could not connect to backend 'b'" and str(port) not in message
        assert not peers
        async with s.post(proxy_url(trusted, "/v1/chat/completions"), json=body) as r:
            assert r.status == 502 and (await r.json())["error"]["message"] == "the backend answered with invalid JSON"
    assert len(peers) == 1  # reached over TLS (the test server answers "secure", not a completion)
