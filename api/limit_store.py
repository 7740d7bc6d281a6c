"""Where the limits of ``api/limits.py`` keep their counts: in process (``memory://``) or in Redis
(``redis://``, shared by every instance), chosen by the same URL as the stream buffer.

Three primitives, each one atomic step (a Lua script on Redis, so instances never race):

* :meth:`LimitStore.hit` — a rate, ``limit`` per ``window_s`` with a burst of ``limit`` (GCRA: one
  timestamp per key, refilled smoothly, never the double burst of a fixed window at its edge);
* :meth:`LimitStore.acquire` / :meth:`LimitStore.release` — a counting semaphore whose members
  hold a *lease*: a member whose holder died (its instance crashed) drops out when the lease ends;
* :meth:`LimitStore.claim` / :meth:`LimitStore.unclaim` — one holder per key (a conversation's
  running reply), also with a lease, released only by the value that claimed it;
* :meth:`LimitStore.mark` / :meth:`LimitStore.marked` — a flag that lasts ``ttl_s`` (a revoked
  conversation, ``api/revocations.py``).

Every key gets a TTL no longer than its lease or window, so Redis memory is bounded by traffic.
Time on Redis is Redis's own (``TIME``), so instances with skewed clocks agree.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api.exceptions import LimitsUnavailable
from streaming.redis_buffer import bounded_pool

PREFIX = "bc:limit:"
# The Redis store's own pool: a request waits this long for a connection, then is refused (503).
POOL_MAX_CONNECTIONS = 64
POOL_WAIT_S = 2.0
# The in-process store sweeps expired keys every this many operations (bounded memory).
SWEEP_EVERY_OPS = 1024


@dataclass(frozen=True)
class ReplyCheck:
    """What :meth:`LimitStore.begin` checks for a new reply (see there)."""

    claim_key: str | None
    claim_value: str
    claim_lease_s: float
    rate_key: str
    rate_limit: int
    rate_window_s: float
    busy: bool  # refused before the place (the instance's own cap, counted by the caller)
    place_key: str
    member: str
    place_limit: int
    place_lease_s: float


class LimitStore(Protocol):
    async def hit(self, key: str, limit: int, window_s: float) -> int:
        """Count one event; 0 when within ``limit`` per ``window_s``, else milliseconds until one fits."""

    async def acquire(self, key: str, member: str, limit: int, lease_s: float) -> bool:
        """Hold one of ``limit`` places for ``lease_s`` (at most); False when all are held."""

    async def release(self, key: str, member: str) -> None: ...

    async def claim(self, key: str, value: str, lease_s: float) -> str | None:
        """Hold ``key`` for ``value``; ``None`` on success, else the value that holds it."""

    async def begin(self, check: ReplyCheck) -> tuple[str, str | int | None]:
        """A reply's places in one atomic step (one round trip on Redis), in this order: claim
        ``check.claim_key`` (when given), count one hit of ``check.rate_key``, then, unless
        ``check.busy``, hold one place of ``check.place_key``. Returns ``("ok", None)`` with
        everything held, or what refused it with nothing held (a claim it made is let go):
        ``("claimed", holder)``, ``("rate", wait_ms)``, ``("busy", None)``, ``("full", None)``."""

    async def give_back(self, place: tuple[str, str] | None, claim: tuple[str, str] | None) -> None:
        """:meth:`release` the ``(key, member)`` place and :meth:`unclaim` the ``(key, value)``
        claim, in one step."""

    async def unclaim(self, key: str, value: str) -> None:
        """Let go of ``key`` if ``value`` still holds it."""

    async def mark(self, key: str, ttl_s: float) -> None:
        """Set a flag on ``key`` for ``ttl_s`` (a later mark extends it)."""

    async def marked(self, key: str) -> bool:
        """Whether ``key`` carries a flag that has not run out."""

    async def close(self) -> None: ...


class MemoryLimitStore:
    """One process's counts (``memory://``): correct for one instance, which is all that mode runs."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tat: dict[str, float] = {}  # GCRA: theoretical arrival time per key
        self._leases: dict[str, dict[str, float]] = {}  # semaphore: member → lease end
        self._claims: dict[str, tuple[str, float]] = {}  # key → (value, lease end)
        self._marks: dict[str, float] = {}  # key → flag end
        self._ops = 0

    def _tick(self) -> float:
        now = self._clock()
        self._ops += 1
        if self._ops % SWEEP_EVERY_OPS == 0:
            self._tat = {k: t for k, t in self._tat.items() if t > now}
            self._claims = {k: c for k, c in self._claims.items() if c[1] > now}
            self._marks = {k: end for k, end in self._marks.items() if end > now}
            for key in list(self._leases):
                self._expire(key, now)
        return now

    def _expire(self, key: str, now: float) -> dict[str, float]:
        members = self._leases.get(key, {})
        for member in [m for m, end in members.items() if end <= now]:
            del members[member]
        if not members:
            self._leases.pop(key, None)
        return members

    async def hit(self, key: str, limit: int, window_s: float) -> int:
        now = self._tick()
        tat = max(self._tat.get(key, now), now)
        # Compared as the backlog after this hit (exactly window_s / limit for a key at rest), not as
        # (tat + window_s / limit) - window_s > now: that float can round above now, and with a limit
        # of 1 a key's very first hit was then refused (1 ms to wait) for some values of the clock.
        backlog = tat - now + window_s / limit
        if backlog > window_s:
            return max(1, int((backlog - window_s) * 1000))
        self._tat[key] = tat + window_s / limit
        return 0

    async def acquire(self, key: str, member: str, limit: int, lease_s: float) -> bool:
        now = self._tick()
        members = self._expire(key, now)
        if member not in members and len(members) >= limit:
            return False
        self._leases.setdefault(key, members)[member] = now + lease_s
        return True

    async def release(self, key: str, member: str) -> None:
        members = self._leases.get(key)
        if members is not None:
            members.pop(member, None)
            if not members:
                del self._leases[key]

    async def claim(self, key: str, value: str, lease_s: float) -> str | None:
        now = self._tick()
        held = self._claims.get(key)
        if held is not None and held[1] > now and held[0] != value:
            return held[0]
        self._claims[key] = (value, now + lease_s)
        return None

    async def unclaim(self, key: str, value: str) -> None:
        held = self._claims.get(key)
        if held is not None and held[0] == value:
            del self._claims[key]

    async def begin(self, check: ReplyCheck) -> tuple[str, str | int | None]:
        if check.claim_key is not None:
            holder = await self.claim(check.claim_key, check.claim_value, check.claim_lease_s)
            if holder is not None:
                return "claimed", holder
        refused: tuple[str, str | int | None] | None = None
        wait_ms = await self.hit(check.rate_key, check.rate_limit, check.rate_window_s)
        if wait_ms:
            refused = ("rate", wait_ms)
        elif check.busy:
            refused = ("busy", None)
        elif not await self.acquire(check.place_key, check.member, check.place_limit, check.place_lease_s):
            refused = ("full", None)
        if refused is None:
            return "ok", None
        if check.claim_key is not None:
            await self.unclaim(check.claim_key, check.claim_value)
        return refused

    async def give_back(self, place: tuple[str, str] | None, claim: tuple[str, str] | None) -> None:
        if place is not None:
            await self.release(*place)
        if claim is not None:
            await self.unclaim(*claim)

    async def mark(self, key: str, ttl_s: float) -> None:
        now = self._tick()
        self._marks[key] = max(self._marks.get(key, now), now + ttl_s)

    async def marked(self, key: str) -> bool:
        now = self._tick()
        return self._marks.get(key, now) > now

    async def close(self) -> None:
        pass


# Redis time in milliseconds, inside a script (allowed since Redis 5: scripts replicate effects).
_NOW = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) "

# GCRA on one key: 0 and the hit counted, else the ms until one would be allowed (nothing counted).
_GCRA = """
local function gcra(key, limit, window_ms)
  local interval = window_ms / limit
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - window_ms
  if allow_at > now then return math.max(1, math.ceil(allow_at - now)) end
  redis.call('SET', key, tostring(new_tat), 'PX', math.max(1, math.ceil(new_tat - now)))
  return 0
end
"""

_HIT = _NOW + _GCRA + "return gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))\n"

_ACQUIRE = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local lease = tonumber(ARGV[3])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], math.ceil(tonumber(last[2])))
return 1
"""
)

_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return false end
return holder
"""

_UNCLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


# A new reply's places in one call (LimitStore.begin): the scripts above, in order, as one.
# KEYS: claim (or any key, unused when ARGV[1] is ''), rate, place. ARGV: claim value ('' for no
# claim), claim lease ms, rate limit, rate window ms, busy ('1' refuses before the place), member,
# place limit, place lease ms. Returns {status, value}.
_BEGIN = (
    _NOW
    + _GCRA
    + """
local claiming = ARGV[1] ~= ''
if claiming and not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local holder = redis.call('GET', KEYS[1])
  if holder ~= ARGV[1] then return {'claimed', holder} end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local function refuse(status, value)
  if claiming and redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return {status, value}
end
local wait = gcra(KEYS[2], tonumber(ARGV[3]), tonumber(ARGV[4]))
if wait > 0 then return refuse('rate', wait) end
if ARGV[5] == '1' then return refuse('busy', 0) end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
if not redis.call('ZSCORE', KEYS[3], ARGV[6]) and redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[7]) then
  return refuse('full', 0)
end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[8]), ARGV[6])
local last = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[3], math.ceil(tonumber(last[2])))
return {'ok', 0}
"""
)

# KEYS: place, claim. ARGV: member ('' for none), claim value ('' for none).
_GIVE_BACK = """
if ARGV[1] ~= '' then redis.call('ZREM', KEYS[1], ARGV[1]) end
if ARGV[2] ~= '' and redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
return 0
"""


# After the limits' Redis failed to answer, refuse limit checks at once for this long.
BREAKER_S = 1.0


class RedisLimitStore:
    """Counts shared by every instance through Redis (``redis://``); its own small connection pool."""

    def __init__(self, url: str) -> None:
        # The same bounded waits as the stream buffer's client: a frozen or blackholed Redis makes a
        # limit check fail in seconds (503 buffer_unavailable), never hang a request.
        pool = bounded_pool(url, max_connections=POOL_MAX_CONNECTIONS, wait_s=POOL_WAIT_S)
        self._redis = aioredis.Redis.from_pool(pool)  # closing the client closes its pool
        self._hit = self._redis.register_script(_HIT)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._claim = self._redis.register_script(_CLAIM)
        self._unclaim = self._redis.register_script(_UNCLAIM)
        self._begin = self._redis.register_script(_BEGIN)
        self._give_back = self._redis.register_script(_GIVE_BACK)
        # One breaker for the limits, one for revocation marks: a revocation check that failed
        # during an outage (it fails open) must not keep refusing replies once Redis is back.
        self._down_until = {"limits": 0.0, "marks": 0.0}

    async def hit(self, key: str, limit: int, window_s: float) -> int:
        async with self._guarded():
            return int(await self._hit(keys=[PREFIX + key], args=[limit, int(window_s * 1000)]))

    async def acquire(self, key: str, member: str, limit: int, lease_s: float) -> bool:
        async with self._guarded():
            return bool(await self._acquire(keys=[PREFIX + key], args=[member, limit, int(lease_s * 1000)]))

    async def release(self, key: str, member: str) -> None:
        async with self._guarded():
            await self._redis.zrem(PREFIX + key, member)

    async def claim(self, key: str, value: str, lease_s: float) -> str | None:
        async with self._guarded():
            holder = await self._claim(keys=[PREFIX + key], args=[value, int(lease_s * 1000)])
        return str(holder) if holder else None

    async def unclaim(self, key: str, value: str) -> None:
        async with self._guarded():
            await self._unclaim(keys=[PREFIX + key], args=[value])

    async def begin(self, check: ReplyCheck) -> tuple[str, str | int | None]:
        claim_key = check.claim_key if check.claim_key is not None else check.rate_key
        keys = [PREFIX + claim_key, PREFIX + check.rate_key, PREFIX + check.place_key]
        args: list[str | int] = [
            check.claim_value if check.claim_key is not None else "",
            int(check.claim_lease_s * 1000),
            check.rate_limit,
            int(check.rate_window_s * 1000),
            "1" if check.busy else "0",
            check.member,
            check.place_limit,
            int(check.place_lease_s * 1000),
        ]
        async with self._guarded():
            status, value = await self._begin(keys=keys, args=args)
        status = str(status)
        if status == "claimed":
            return status, str(value)
        if status == "rate":
            return status, int(value)
        return status, None

    async def give_back(self, place: tuple[str, str] | None, claim: tuple[str, str] | None) -> None:
        if place is None and claim is None:
            return
        place_key, member = place if place is not None else ("-", "")
        claim_key, value = claim if claim is not None else ("-", "")
        async with self._guarded():
            await self._give_back(keys=[PREFIX + place_key, PREFIX + claim_key], args=[member, value])

    async def mark(self, key: str, ttl_s: float) -> None:
        async with self._guarded("marks"):
            await self._redis.set(PREFIX + key, "1", px=max(1, int(ttl_s * 1000)))

    async def marked(self, key: str) -> bool:
        async with self._guarded("marks"):
            return bool(await self._redis.exists(PREFIX + key))

    async def close(self) -> None:
        await self._redis.aclose()

    @contextlib.asynccontextmanager
    async def _guarded(self, breaker: str = "limits") -> AsyncIterator[None]:
        """Redis down or its pool exhausted: the request is refused as retryable (503), never a 500.
        After a failure, calls fail at once for BREAKER_S instead of each waiting out the socket
        timeouts again (one request may check several limits)."""
        if time.monotonic() < self._down_until[breaker]:
            raise LimitsUnavailable("limits unavailable: the limits' Redis did not answer a moment ago")
        try:
            yield
        except (RedisError, OSError) as exc:
            self._down_until[breaker] = time.monotonic() + BREAKER_S
            raise LimitsUnavailable(f"limits unavailable: {type(exc).__name__}") from exc


def make_limit_store(url: str) -> LimitStore:
    """The store for a buffer URL: Redis for ``redis://`` / ``rediss://``, else in process."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisLimitStore(url)
    return MemoryLimitStore()
