"""The aiohttp server under the model-service stubs: 127.0.0.1, an ephemeral port, `/v1` base."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Self

from aiohttp import web


@dataclass(kw_only=True)
class StubServer:
    host: str = "127.0.0.1"
    port: int = 0
    _runner: web.AppRunner | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        """The HTTP base URL to pass as `base_url=` (or OPENAI_BASE_URL)."""
        return f"http://{self.host}:{self.port}/v1"

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
