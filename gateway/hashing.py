"""Password checks (argon2id, ~150 ms of CPU each) off the event loop, bounded.

A storm of wrong passwords must not starve key logins, running sessions or the web: each
check runs in one of ``workers`` threads (argon2's C code releases the GIL), never on the
event loop and never inside a database transaction (the policy service reads the hash,
closes its session, then asks here). At most ``queue`` checks wait for a thread; one more
is refused at once with ``LoginBusy`` — it is not a failed login, so it does not count
against the person's throttle — rather than queued without bound. A check whose client has
gone away keeps its place until its thread finishes, so disconnecting cannot grow the queue.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from gateway.errors import LoginBusy
from policy.passwords import verify_password


class HashPool:
    def __init__(
        self,
        workers: int,
        queue: int,
        check: Callable[[str | None, str], bool] = verify_password,
    ) -> None:
        self._check = check
        self._executor = ThreadPoolExecutor(max(1, workers), thread_name_prefix="lockgate-argon2")
        self.limit = max(1, workers) + max(0, queue)
        self._lock = threading.Lock()
        self._pending = 0
        self.refused = 0

    @property
    def pending(self) -> int:
        """Checks running or waiting for a thread."""
        return self._pending

    async def verify(self, stored: str | None, password: str) -> bool:
        """``policy.passwords.verify_password`` in a worker thread. Raises LoginBusy when
        ``limit`` checks are already running or waiting."""
        with self._lock:
            if self._pending >= self.limit:
                self.refused += 1
                raise LoginBusy("too many password checks in progress; try again")
            self._pending += 1
        try:
            future = self._executor.submit(self._check, stored, password)
        except RuntimeError:  # shut down
            self._done(None)
            raise LoginBusy("the gateway is stopping") from None
        future.add_done_callback(self._done)
        return await asyncio.wrap_future(future)

    def _done(self, _: Future[bool] | None) -> None:
        with self._lock:
            self._pending -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
