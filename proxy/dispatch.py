"""Choosing the deployment that serves a request.

The single-deployment form routes straight to its one deployment; resilient routing (several
deployments, strategies, retries, fallbacks, circuit breaking) extends `Dispatcher.dispatch`.
"""

from __future__ import annotations

from aiohttp import web

from . import relay
from .relay import Call
from .routing import Route, Router


class Dispatcher:
    def __init__(self, router: Router) -> None:
        self.router = router

    async def dispatch(self, call: Call, route: Route) -> web.StreamResponse:
        return await relay.serve(call, route.deployments[0])
