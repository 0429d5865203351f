"""Test support for Vertex AI: the Vertex emulator trusting a service account made for the test (its
token endpoint is the file's `token_uri`, as Google's is for a real file)."""

from __future__ import annotations

from pathlib import Path

from loadtest.emulators import vertex

EMAIL = vertex.DEMO_EMAIL
PROJECT = vertex.DEMO_PROJECT
new_service_account = vertex.new_service_account


async def start_vertex(aiohttp_server, directory: Path):
    """(root URL, emulator app, service-account file the emulator trusts)."""
    app = vertex.create_app()
    server = await aiohttp_server(app)
    url = str(server.make_url("")).rstrip("/")
    path, public = new_service_account(directory, url + "/token")
    vertex.register_service_account(app, EMAIL, public)
    return url, app, path
