"""livekit-agents' AgentServer, with a drain that cannot spin.

In livekit-agents 1.8.9 `AgentServer.drain` waits for the job processes like this:

    while True:
        procs = [p for p in self._proc_pool.processes if p.running_job]
        if not procs:
            break
        for proc in procs:
            await proc.join()

A job process that has ended stays in `processes` with `running_job` still set (it is never
cleared) until the pool's monitor task removes it, and awaiting a finished join does not
suspend. When the drain resumes before that monitor, it spins on the ended process forever
without yielding, and the whole event loop with it: a timeout cannot fire, shutdown never
ends (seen under load, two jobs ending together, in tests/test_caller_jobs.py). The same
steps here, but each round yields, so the monitor runs and a timeout holds.

Imported only where the worker starts (livekit costs ~100 MB).
"""

from __future__ import annotations

import asyncio
import logging

from livekit.agents import AgentServer
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils import is_given

log = logging.getLogger(__name__)

ROUND = 0.02
"""Seconds between two looks at the job processes while draining."""


class DrainingAgentServer(AgentServer):
    async def drain(self, timeout: NotGivenOr[int | None] = NOT_GIVEN) -> None:
        """Take no new jobs; wait for the running ones (raises TimeoutError after `timeout`)."""
        timeout = timeout if is_given(timeout) else self._drain_timeout
        async with self._lock:
            if self._draining:
                return
            log.info("draining the agent worker (at most %s s)", timeout)
            self._draining = True
            await self._update_worker_status()

            async def drained() -> None:
                await asyncio.gather(*self._job_lifecycle_tasks, return_exceptions=True)
                while procs := [p for p in self._proc_pool.processes if p.running_job]:
                    await asyncio.gather(*(p.join() for p in procs), return_exceptions=True)
                    await asyncio.sleep(ROUND)  # the pool's monitor removes the ended ones

            if timeout:
                await asyncio.wait_for(drained(), timeout)
            else:
                await drained()
