"""Load shedding and per-key rate limits: the excess is answered 429 at once, not queued.

Each costly lane (search, embeddings, answers) admits a bounded number of requests at a time
per API process; one more is refused before its body is read. At the bound, accepted requests
wait no longer than they do when that many clients use the lane at full capacity (Little's
law), so overload costs the excess a fast 429 and costs everyone else nothing.

When the API process itself is the bottleneck (cached searches: ~1 ms of CPU each here), its
event loop falls behind before a lane is full, and every request, a refusal too, waits in
that backlog (measured: 429 p99 420 ms at 3x). So while the loop lags more than BUSY_LAG_S,
lanes admit only what keeps one request in flight.

The per-key limit is a sliding window counted in Redis (the `limits` library), so it holds
across API replicas.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from prometheus_client import Counter, Gauge
from starlette.types import ASGIApp, Receive, Scope, Send

from orchestrator.api.errors import error_response
from orchestrator.api.metrics import Metrics
from orchestrator.errors import ErrorCode, TritonRagError
from orchestrator.settings import Settings


@dataclass
class Lane:
    name: str
    path: re.Pattern[str]
    limit: int
    in_flight: int = 0


def lanes(settings: Settings) -> list[Lane]:
    return [
        Lane("search", re.compile(r"^/v1/collections/[^/]+/search$"), settings.max_searches),
        Lane("embeddings", re.compile(r"^/v1/embeddings$"), settings.max_embeddings),
        Lane(
            "answers",
            re.compile(r"^/v1/(collections/[^/]+/ask|chat/completions)$"),
            settings.max_answer_requests,
        ),
    ]


BUSY_LAG_S = 0.02  # event-loop lag that means the process has more work than CPU
LAG_PROBE_S = 0.01
LAG_PROBES = 3


class Admission:
    """Pure ASGI, outside routing and body parsing: a refusal costs well under a millisecond."""

    def __init__(self, app: ASGIApp, lanes: list[Lane], metrics: Metrics) -> None:
        self.app = app
        self.lanes = lanes
        self.lag = 0.0
        self._probe: asyncio.Task[None] | None = None
        self.in_flight = Gauge(
            "tritonrag_lane_in_flight",
            "Requests being served per API lane.",
            ["lane"],
            registry=metrics.registry,
        )
        self.shed = Counter(
            "tritonrag_requests_shed",
            "Requests refused with 429 because their lane was full.",
            ["lane"],
            registry=metrics.registry,
        )
        for lane in lanes:
            self.in_flight.labels(lane.name).set_function(_reader(lane))
            self.shed.labels(lane.name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lane = self._lane(scope)
        if lane is None:
            await self.app(scope, receive, send)
            return
        if self._probe is None:
            self._probe = asyncio.get_running_loop().create_task(self._measure_lag())
        busy = self.lag > BUSY_LAG_S and lane.in_flight > 0
        if lane.in_flight >= lane.limit or busy:
            self.shed.labels(lane.name).inc()
            why = "the server is busy" if busy else f"{lane.limit} requests in progress"
            refused = TritonRagError(
                ErrorCode.OVERLOADED, f"the {lane.name} lane is full ({why}); retry shortly", 1
            )
            await error_response(refused)(scope, receive, send)
            return
        lane.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            lane.in_flight -= 1

    async def _measure_lag(self) -> None:
        """How late a short sleep wakes up: the time a new request waits for the loop. The
        least of the last few probes: a backlog delays every one, while the scheduler giving
        the cores to Triton for a slice (20-40 ms on 2 busy cores) delays one; shedding on that
        refused 6-14 % of embeddings at concurrency 32 that Triton was about to serve."""
        loop = asyncio.get_running_loop()
        recent: deque[float] = deque(maxlen=LAG_PROBES)
        while True:
            start = loop.time()
            await asyncio.sleep(LAG_PROBE_S)
            recent.append(loop.time() - start - LAG_PROBE_S)
            self.lag = min(recent)

    def _lane(self, scope: Scope) -> Lane | None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        path: str = scope["path"]
        return next((lane for lane in self.lanes if lane.path.match(path)), None)


def _reader(lane: Lane) -> Callable[[], float]:
    return lambda: lane.in_flight


class KeyLimiter:
    """`rate_limit` requests per API key, e.g. "100/second"; "" turns it off."""

    def __init__(self, settings: Settings) -> None:
        self.item: RateLimitItem | None = (
            parse(settings.rate_limit) if settings.rate_limit else None
        )
        url = settings.broker_url.replace("redis://", "async+redis://", 1)
        self.limiter = SlidingWindowCounterRateLimiter(
            RedisStorage(url, implementation="redispy", key_prefix="tritonrag:ratelimit")
        )

    async def check(self, key: str) -> None:
        if self.item is None:
            return
        # The key itself never goes to Redis.
        name = hashlib.sha256(key.encode()).hexdigest()[:24]
        if await self.limiter.hit(self.item, name):
            return
        stats = await self.limiter.get_window_stats(self.item, name)
        wait = max(1, math.ceil(stats.reset_time - time.time()))
        raise TritonRagError(
            ErrorCode.OVERLOADED, f"rate limit of {self.item} per API key exceeded", wait
        )
