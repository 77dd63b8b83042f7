"""`jackfield run` with an unregistered worker that launches one job linked to a test's text
console: the production App, the way LiveKit would run a job in it, minus the LiveKit server.

    JACKFIELD_TEST_TEXT_LINK=host:port:token python -m tests.job_host

Settings come from the environment as for `jackfield run`; JACKFIELD_AGENT_UNREGISTERED is
implied. Exits with App.run's code.
"""

from __future__ import annotations

import asyncio
import os
import sys

from jackfield.app import App
from jackfield.settings import Settings
from jackfield.shell.text_link import TextLinkAddress


async def serve(app: App) -> int:
    running = asyncio.create_task(app.run())
    while app.worker is None and not running.done():  # the worker exists after the first pass
        await asyncio.sleep(0.02)
    if app.worker is not None:
        await app.worker.simulate("host-room")
    return await running


def main() -> int:
    host, port, token = os.environ.pop("JACKFIELD_TEST_TEXT_LINK").split(":", 2)
    settings = Settings(agent_unregistered=True)
    app = App(settings, text_link=TextLinkAddress(host, int(port), token))
    return asyncio.run(serve(app))


if __name__ == "__main__":
    sys.exit(main())
