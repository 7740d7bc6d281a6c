"""``redis://`` — the shared buffer: any instance can replay and follow any stream, and take over
producing one whose instance died.

Layout (prefix ``bc:``)::

    bc:s:{stream_id}          Redis Stream; entry id "{seq}-0", fields t=type, d=json
    bc:s:{stream_id}:m        hash: c=conversation_id, at=created (epoch s), o=producer, origin=JSON,
                              n=the log's last seq, cancel=1 when cancelled, end=1 and last=seq
                              once terminal
    bc:s:{stream_id}:l        the producer's lease: its owner id, with a TTL of LEASE_TTL_S
    bc:live                   sorted set: open streams by lease deadline (ms, Redis clock)
    bc:ch:{stream_id}         pub/sub channel: live events, "owner" then one "seq type json" line each
                              (built by the append script from the lines it was given)
    bc:c:{conv}:msgs          hash: client_message_id -> stream_id (idempotent sends)
    bc:c:{conv}:turns         list of JSON turns
    bc:c:{conv}:replies       hash: stream_id -> {"text", "status"} once the reply ended
    bc:cancel                 pub/sub channel: stream ids whose generation should stop

Why the entry id is the seq: ``XADD`` refuses an id not above the last one, so a second writer
can never interleave, and "events after N" is a plain ``XRANGE (N+1)-0 +``.

**Producers and leases.** Every append is one Lua script that checks the meta hash's producer
(``o``) first: an instance that lost the stream to another (it was paused past its lease) has its
writes refused atomically (:class:`~streaming.exceptions.LeaseLost`). The first append sets the
lease and a timer renews it (not every append: that cost a SET and a ZADD per event); when it
expires, any instance's sweeper (``reply/jobs.py``) may :meth:`take_over` the stream — the script
rewrites ``o`` — and continue it from the last durable seq.

**Durability first, local first.** An append resolves once Redis has it; only then do followers on
this instance get the events, straight from memory (we do not subscribe to the channels of
the streams we produce, so Redis sends us no echo of our own writes). Followers on other
instances get them over pub/sub. So every event any client sees is in Redis, and a producer
that takes over never renumbers a seq some client already saw (docs/streaming.md, "Invariants").

**Outages.** When Redis is unreachable the instance-wide writer keeps the events in memory and
retries with backoff; the job's append waits (its followers wait too: no word is lost). When Redis
returns, the writer writes back whatever it lost: a stream whose meta hash is gone is restored
whole (origin, every event, the conversation's ``client_message_id`` and turns), one whose log is
behind gets the missing tail. If Redis stays away for ``outage_deadline_s``, every waiting append
fails with :class:`~streaming.exceptions.BufferUnavailable` and the job ends the reply (its
terminal event is still written back if Redis returns later). redis-py runs with socket timeouts,
health checks and a bounded retry, so no call waits longer than a few seconds.

Live delivery costs one pub/sub connection per instance, not one per follower: the reader task
subscribes to a stream's channel when its first local follower arrives (ref-counted) and fans
events out in memory (:mod:`streaming.fanout`). A stream this instance produces is not subscribed
at all (its followers here are fed from memory; the channel would only echo our appends back): its
followers are subscribed when production moves elsewhere, and re-read the log then. redis-py's asyncio ``PubSub`` allows
``subscribe()`` from one task while another awaits ``get_message()`` on the same connection,
which is what encode/broadcaster relies on too; after a reconnect it re-subscribes every channel
by itself (``PubSub.on_connect``). A follower reads the log without waiting for the subscription to
be confirmed; when the confirmation arrives its followers re-read the log once, so nothing
published in between is lost. On a reader reconnect every follower is marked lagged and re-reads
the log, too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import secrets
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from loguru import logger
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.driver_info import DriverInfo
from redis.event import EventDispatcher
from redis.exceptions import NoScriptError, RedisError

from streaming.contract import (
    AssistantTurn,
    BufferOptions,
    CancelHandler,
    LeaseLostHandler,
    Orphan,
    ReplyStatus,
    StreamInfo,
    StreamOrigin,
    Turn,
    decode_turn,
    encode_turn,
)
from streaming.events import FAILOVER_REASON, RetractEvent, StoredEvent, encode
from streaming.exceptions import BufferUnavailable, LeaseLost, StreamExpired
from streaming.fanout import Fanout, Subscription
from streaming.log import fold_text

PREFIX = "bc:"
CANCEL_CHANNEL = PREFIX + "cancel"
LIVE_KEY = PREFIX + "live"

# Bounded pool: a burst waits (at most POOL_WAIT_S) for a connection instead of opening thousands.
# Appends of every stream share one pipeline, so a busy instance needs few connections.
POOL_MAX_CONNECTIONS = 64
POOL_WAIT_S = 5.0
# No Redis call waits longer than this for a reply (a paused or blackholed Redis answers nothing;
# without a socket timeout a call would wait for the kernel's TCP timeout, minutes).
SOCKET_TIMEOUT_S = 1.5
# redis-py's own retry of a failed call: one more try, 50 ms later. Longer outages are the writer's
# and the followers' business (they retry with their own backoff until the outage deadline).
CALL_RETRIES = 1
# A pooled connection idle this long is pinged before use, so a dead one is noticed before a call.
HEALTH_CHECK_INTERVAL_S = 5
# Until the first stream is created and tells the writer its lifetime (deadline + resume window).
INITIAL_STREAM_TTL_S = 3600
# The pub/sub reader's and the writer's reconnect backoff, doubling from min to max.
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 1.0
# How long one pub/sub read waits before looping (lets cancellation and reconnects in).
READER_POLL_S = 1.0
# How many orphans one sweep looks at.
ORPHANS_PER_SWEEP = 50
# During a Redis outage, followers on this instance keep receiving events Redis does not have yet:
# at most LOCAL_AHEAD_MAX_EVENTS of them, one every LOCAL_AHEAD_INTERVAL_S (the job's text coalesces
# in between), so about 8 s of a reply, enough for a Redis restart. Whoever takes a stream over first
# writes LOCAL_AHEAD_MAX_EVENTS + 1 failover retracts, so a client that saw any of those events still
# gets a retract after them and never keeps text the new producer numbered differently
# (docs/streaming.md, "Invariants").
LOCAL_AHEAD_MAX_EVENTS = 32
LOCAL_AHEAD_INTERVAL_S = 0.25
# A write still unanswered this long (at most a third of the outage deadline) counts as the start of
# an outage: followers here start receiving events from memory at once. Waiting for the write to
# *fail* took two socket timeouts (~3 s), as long as a short outage deadline, so a blackholed Redis
# left this instance's own clients with nothing before their retryable refusal.
STALL_S = 0.5
# A stream this instance created but never started (its client_message_id lost the race) is
# forgotten after this long.
UNSTARTED_FORGET_S = 60.0


_DRIVER_INFO = DriverInfo()


def bounded_pool(
    url: str, *, max_connections: int = POOL_MAX_CONNECTIONS, wait_s: float = POOL_WAIT_S
) -> aioredis.BlockingConnectionPool:
    """A connection pool whose every wait is bounded (see the constants above): a frozen or
    blackholed Redis makes a call fail in seconds instead of hanging it."""
    return aioredis.BlockingConnectionPool.from_url(
        url,
        decode_responses=True,
        max_connections=max_connections,
        timeout=wait_s,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
        retry=Retry(ExponentialBackoff(cap=BACKOFF_MAX_S, base=BACKOFF_MIN_S), CALL_RETRIES),
        # Built once, not per connection: redis-py otherwise reads its own package metadata from disk
        # and builds six listener objects for every connection it makes (~3 ms each, paid whenever the
        # pool grows under a burst or reconnects after an outage).
        driver_info=_DRIVER_INFO,
        event_dispatcher=EventDispatcher(),  # one per pool (its lock is bound to one event loop)
    )


def _skey(stream_id: str) -> str:
    return f"{PREFIX}s:{stream_id}"


def _mkey(stream_id: str) -> str:
    return f"{PREFIX}s:{stream_id}:m"


def _lkey(stream_id: str) -> str:
    return f"{PREFIX}s:{stream_id}:l"


def _channel(stream_id: str) -> str:
    return f"{PREFIX}ch:{stream_id}"


def _ckey(conversation_id: str, part: str) -> str:
    return f"{PREFIX}c:{conversation_id}:{part}"


def _decode_live(payload: str) -> tuple[str, list[StoredEvent]]:
    owner, _, body = payload.partition("\n")
    out = []
    for line in body.split("\n"):
        seq, kind, data = line.split(" ", 2)
        out.append(StoredEvent(int(seq), kind, data))
    return owner, out


def _event_args(events: Sequence[StoredEvent]) -> list[str | int]:
    args: list[str | int] = []
    for e in events:
        args += [e.seq, e.type, e.data]
    return args


# Redis's own clock in ms, so lease deadlines mean the same on every instance.
_NOW_MS = "local t = redis.call('TIME'); local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"

# Fenced append of the pending events of several streams, in one call. KEYS: live. ARGV: owner,
# lease_ms, then per stream: a header "stream_id count stream_ttl_s terminal_expire_s" (terminal
# '-' while open), the origin JSON (set with the stream's first events, '' after), then `count`
# events, each one argument "seq type data" (the live message's own line format). A stream's keys
# are derived from its id here, not passed: redis-py encodes every argument of every call one by
# one in Python (several isinstance checks, an encode and a join each), which was the largest
# Redis cost per word left in the server (three arguments per event plus the live payload again
# plus ten per stream); now one per event plus two per stream. Returns one {status, last durable
# seq} per stream: ok | fenced (another producer) | gone (Redis lost the stream) | behind (Redis
# lost the log's tail: resend from last + 1).
#
# One call for every stream the writer has pending, not one per stream: each script call costs
# Redis a few µs and redis-py tens of µs to pack and parse. The last seq is kept in the meta hash
# (n), read with the producer in one HMGET and written in the same script as the entries, so it
# always matches the log (an AOF or a replica replays a script whole); only a stream written before
# n existed, or whose log key is gone (evicted: the producer then resends it from seq 1), is read
# with XREVRANGE. XADD with explicit ids still refuses any id not above the log's last, whatever n
# says. The lease is set by the first append (and by a takeover or a write-back); after that the
# renewal timer keeps it (every LEASE_TTL_S / 3), not every append: the producer field o is what
# fences writes, the lease only says when a sweeper may take the stream over.
_APPEND = (
    f"local P = '{PREFIX}'\n"
    + """
local function append(a)
  local sid, count, ttl, term = string.match(ARGV[a], '^(%S+) (%d+) (%d+) (%S+)$')
  count = tonumber(count)
  local skey, mkey = P .. 's:' .. sid, P .. 's:' .. sid .. ':m'
  local m = redis.call('HMGET', mkey, 'o', 'n')
  local o = m[1]
  if not o then return {'gone', 0} end
  if o ~= ARGV[1] then return {'fenced', 0} end
  local last = tonumber(m[2])
  if not last or redis.call('EXISTS', skey) == 0 then
    last = 0
    local top = redis.call('XREVRANGE', skey, '+', '-', 'COUNT', 1)
    if #top > 0 then last = tonumber(string.match(top[1][1], '^(%d+)')) end
  end
  if tonumber(string.match(ARGV[a + 2], '^(%d+)')) > last + 1 then return {'behind', last} end
  local first = last == 0
  local wrote = 0
  local lines = {ARGV[1]}
  for i = a + 2, a + 1 + count do
    local seq, kind, data = string.match(ARGV[i], '^(%d+) (%S+) (.*)$')
    seq = tonumber(seq)
    lines[#lines + 1] = ARGV[i]
    if seq > last then
      local added = redis.pcall('XADD', skey, seq .. '-0', 't', kind, 'd', data)
      if type(added) == 'table' and added.err then
        -- n was behind the log (a writer that does not keep it wrote since): trust the log
        if wrote > 0 then redis.call('PUBLISH', P .. 'ch:' .. sid, table.concat(lines, '\\n', 1, #lines - 1)) end
        local top = redis.call('XREVRANGE', skey, '+', '-', 'COUNT', 1)
        local at = tonumber(string.match(top[1][1], '^(%d+)'))
        redis.call('HSET', mkey, 'n', at)
        return {'behind', at}
      end
      last = seq
      wrote = wrote + 1
    end
  end
  if ARGV[a + 1] ~= '' then redis.call('HSET', mkey, 'origin', ARGV[a + 1]) end
  if term ~= '-' then
    redis.call('HSET', mkey, 'n', last, 'end', '1', 'last', last)
    redis.call('EXPIRE', skey, term)
    redis.call('EXPIRE', mkey, term)
    redis.call('DEL', mkey:sub(1, -2) .. 'l')
    redis.call('ZREM', KEYS[1], sid)
  elseif wrote > 0 then
    redis.call('HSET', mkey, 'n', last)
    if first then
      redis.call('EXPIRE', skey, ttl)
      local t = redis.call('TIME')
      redis.call('SET', mkey:sub(1, -2) .. 'l', ARGV[1], 'PX', ARGV[2])
      redis.call('ZADD', KEYS[1], t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[2]), sid)
    end
  end
  if wrote > 0 then redis.call('PUBLISH', P .. 'ch:' .. sid, table.concat(lines, '\\n')) end
  return {'ok', last}
end
local out = {}
local a = 3
while a <= #ARGV do
  local count = tonumber(string.match(ARGV[a], '^%S+ (%d+)'))
  out[#out + 1] = append(a)
  a = a + 2 + count
end
return out
"""
)

# Lease renewal between appends. KEYS: meta, lease, live. ARGV: owner, lease_ms, stream_id.
_RENEW = (
    _NOW_MS
    + """
local o = redis.call('HGET', KEYS[1], 'o')
if not o then return 'gone' end
if o ~= ARGV[1] then return 'fenced' end
if redis.call('HGET', KEYS[1], 'end') == '1' then return 'ended' end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), ARGV[3])
return 'ok'
"""
)

# KEYS: live. ARGV: limit.
_ORPHANS = _NOW_MS + "return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[1])\n"

# KEYS: meta, lease, live. ARGV: owner, lease_ms, stream_id. Returns the meta hash, or nil.
_TAKE_OVER = (
    _NOW_MS
    + """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HGET', KEYS[1], 'end') == '1' then
  redis.call('ZREM', KEYS[3], ARGV[3])
  return nil
end
if redis.call('EXISTS', KEYS[2]) == 1 then return nil end
if not redis.call('HGET', KEYS[1], 'origin') then
  redis.call('ZREM', KEYS[3], ARGV[3])
  return nil
end
redis.call('HSET', KEYS[1], 'o', ARGV[1])
redis.call('HDEL', KEYS[1], 'n')  -- the new producer's first append reads the log's last entry
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), ARGV[3])
return redis.call('HGETALL', KEYS[1])
"""
)

# Write back a stream Redis lost (it restarted without its data). KEYS: stream, meta, lease, live,
# msgs, turns. ARGV: owner, lease_ms, stream_ttl_s, terminal_expire_s ('' while open), stream_id,
# conversation_id, created_at, origin JSON, client_message_id, conversation_ttl_s, turn count,
# turns…, then seq/type/data triples. Turns are restored only when the conversation lost them all.
_RESTORE = (
    _NOW_MS
    + """
if redis.call('HGET', KEYS[2], 'o') then return 'present' end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[2], 'c', ARGV[6], 'at', ARGV[7], 'o', ARGV[1], 'origin', ARGV[8])
redis.call('EXPIRE', KEYS[2], ARGV[3])
local nturns = tonumber(ARGV[11])
local first = 12 + nturns
local last = 0
for i = first, #ARGV, 3 do
  redis.call('XADD', KEYS[1], ARGV[i] .. '-0', 't', ARGV[i + 1], 'd', ARGV[i + 2])
  last = tonumber(ARGV[i])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[2], 'n', last)
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[2], 'end', '1', 'last', last)
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
else
  redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
  redis.call('ZADD', KEYS[4], now + tonumber(ARGV[2]), ARGV[5])
end
redis.call('HSETNX', KEYS[5], ARGV[9], ARGV[5])
redis.call('EXPIRE', KEYS[5], ARGV[10])
if redis.call('EXISTS', KEYS[6]) == 0 and nturns > 0 then
  for i = 12, first - 1 do redis.call('RPUSH', KEYS[6], ARGV[i]) end
  redis.call('EXPIRE', KEYS[6], ARGV[10])
end
return 'restored'
"""
)

# Ends a stream whose writer is gone: atomic, so racing followers add one terminal event at most.
_END_ABANDONED = """
if redis.call('EXISTS', KEYS[2]) == 0 or redis.call('HGET', KEYS[2], 'end') == '1' then return 0 end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local seq = 1
if #last > 0 then seq = tonumber(string.match(last[1][1], '^(%d+)')) + 1 end
local data = cjson.encode({type='error', stream_id=ARGV[1], seq=seq, code=ARGV[2], message=ARGV[3], retryable=true})
redis.call('XADD', KEYS[1], seq .. '-0', 't', 'error', 'd', data)
redis.call('HSET', KEYS[2], 'n', seq, 'end', '1', 'last', seq)
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('DEL', KEYS[4])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('PUBLISH', KEYS[3], '-\\n' .. seq .. ' error ' .. data)
return seq
"""


@dataclass
class _Produced:
    """A stream this instance produces: every event it appended (for write-back), what Redis has."""

    stream_id: str
    conversation_id: str
    created_at: float
    ttl_s: int
    origin: StreamOrigin | None = None  # set when production starts
    origin_stored: bool = False  # Redis has the origin (written with the first events)
    events: list[StoredEvent] = field(default_factory=list)
    durable_seq: int = 0
    terminal_expire_s: int | None = None
    waiters: list[tuple[int, asyncio.Future[None]]] = field(default_factory=list)
    needs_restore: bool = False
    behind_since: float | None = None  # monotonic time since when Redis lacks some of our events
    delivered_seq: int = 0  # the last seq this instance's followers were given (≥ durable_seq in an outage)
    local_at: float = 0.0  # when the last event went to local followers ahead of Redis

    @property
    def last_seq(self) -> int:
        return self.events[-1].seq if self.events else 0

    def undurable(self) -> list[StoredEvent]:
        # From the end: events are in seq order, and only the last few are not durable yet.
        events, durable, i = self.events, self.durable_seq, len(self.events)
        while i > 0 and events[i - 1].seq > durable:
            i -= 1
        return events[i:]


class RedisBuffer:
    def __init__(self, url: str, options: BufferOptions) -> None:
        self.url = url
        self.owner = f"p-{secrets.token_hex(6)}"  # this process as a producer (fencing token)
        self._own_prefix = self.owner + "\n"  # how our own live messages begin (the append script's)
        self._conversation_ttl_s = options.conversation_ttl_s
        self._resume_window_s = options.resume_window_s
        self._subscription_maxsize = options.subscription_maxsize
        self._lease_ms = max(1, int(options.lease_ttl_s * 1000))
        self._lease_ttl_s = options.lease_ttl_s
        self._outage_deadline_s = options.outage_deadline_s
        self._pool = bounded_pool(url)
        self._redis = aioredis.Redis(connection_pool=self._pool)
        # The reader blocks in get_message(timeout=READER_POLL_S): its socket timeout must be longer.
        self._pubsub = self._redis.pubsub()
        self._append_script = self._redis.register_script(_APPEND)  # its sha; called in the writer's pipeline
        self._renew_script = self._redis.register_script(_RENEW)
        self._orphans_script = self._redis.register_script(_ORPHANS)
        self._take_over_script = self._redis.register_script(_TAKE_OVER)
        self._restore_script = self._redis.register_script(_RESTORE)
        self._end_abandoned_script = self._redis.register_script(_END_ABANDONED)
        self._fanout = Fanout()
        self._refs: dict[str, int] = {}  # stream_id -> local followers
        self._subscribed: set[str] = set()  # streams whose channel we subscribed (or will on reconnect)
        self._sub_lock = asyncio.Lock()
        self._cancel_handler: CancelHandler | None = None
        self._lease_lost_handler: LeaseLostHandler | None = None
        self._handler_tasks: set[asyncio.Task[None]] = set()
        self._produced: dict[str, _Produced] = {}
        self._write_wake = asyncio.Event()
        # What the writer looks at next: the streams appended to since its last look (insertion-ordered),
        # or every produced stream after anything else woke it (a failed write, a restore, a stream Redis
        # lost or is behind on). An append is the only frequent wake; scanning every stream for it was
        # O(streams) per write.
        self._dirty: dict[str, None] = {}
        self._rescan = False
        self._outage_since: float | None = None
        self._stall_s = min(STALL_S, self._outage_deadline_s / 3)
        self._gather_s = options.write_gather_s
        self._tasks: list[asyncio.Task[None]] = []
        self._stream_ttl_s = INITIAL_STREAM_TTL_S

    # --- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        await self._redis.ping()
        await self._redis.script_load(_APPEND)  # the writer calls it by sha (NOSCRIPT reloads it too)
        await self._pubsub.subscribe(CANCEL_CHANNEL)
        self._tasks = [
            asyncio.create_task(self._read_forever(), name="redis-buffer-reader"),
            asyncio.create_task(self._write_forever(), name="redis-buffer-writer"),
            asyncio.create_task(self._renew_forever(), name="redis-buffer-leases"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for handler in list(self._handler_tasks):
            handler.cancel()
        for produced in self._produced.values():
            _fail_waiters(produced, BufferUnavailable("the Redis buffer is closed", stream_id=produced.stream_id))
        self._produced.clear()
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        with contextlib.suppress(RedisError, OSError):
            await self._redis.aclose()
        await self._pool.disconnect()

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            raise _unavailable(exc, None) from exc

    # --- streams ------------------------------------------------------------------------------
    async def create_stream(
        self, stream_id: str, conversation_id: str, ttl_s: int, client_message_id: str | None = None
    ) -> str:
        mkey = _mkey(stream_id)
        created_at = time.time()
        winner = stream_id
        try:
            # One transaction: the stream exists before anyone can learn it won the message id.
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(mkey, mapping={"c": conversation_id, "at": f"{created_at:.3f}", "o": self.owner})
                pipe.expire(mkey, ttl_s)
                if client_message_id is not None:
                    self._claim(pipe, conversation_id, client_message_id, stream_id)
                results = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise _unavailable(exc, stream_id) from exc
        if client_message_id is not None:
            winner = str(results[3])
        # Every stream gets the same lifetime (deadline + resume window); the stream key, born on
        # the first append, takes the latest value seen here.
        self._stream_ttl_s = ttl_s
        if winner == stream_id:
            self._produced[stream_id] = _Produced(stream_id, conversation_id, created_at, ttl_s)
        return winner

    async def start_production(self, stream_id: str, origin: StreamOrigin, first: Sequence[StoredEvent]) -> None:
        produced = self._produced.get(stream_id)
        if produced is None:
            raise LeaseLost(stream_id)
        produced.origin = origin
        # The origin goes to Redis in the same script call as these first events (no round trip of
        # its own): no instance can take the stream over before both are there (no lease before).
        await self.append(stream_id, first)

    async def append(self, stream_id: str, events: Sequence[StoredEvent], *, expire_after_s: int | None = None) -> None:
        """Hand the events to the instance-wide writer and wait until Redis has them.

        Appends from every stream on this instance are written together: while one pipeline is in
        flight the next batch gathers, so a busy instance sends one round trip for many streams.
        One writer per stream (the job) awaits each append before the next, so per-stream order is
        kept. Cancelling the wait leaves the events queued: they are numbered, so they are written
        once. Raises LeaseLost, BufferUnavailable (after the outage deadline) or StreamExpired."""
        if not events:
            return
        produced = self._produced.get(stream_id)
        if produced is None:
            raise LeaseLost(stream_id)
        if produced.behind_since is None:
            produced.behind_since = time.monotonic()
        produced.events.extend(events)
        if expire_after_s is not None:
            produced.terminal_expire_s = expire_after_s
        self._dirty[stream_id] = None
        self._write_wake.set()
        self._raise_if_down(stream_id)  # kept for write-back, but nobody should wait for it now
        if self._outage_since is not None and events[-1].seq <= produced.durable_seq + LOCAL_AHEAD_MAX_EVENTS:
            # Redis is down: our followers get the events from memory (bounded), without waiting.
            pause = produced.local_at + LOCAL_AHEAD_INTERVAL_S - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            self._deliver_locally(produced)
            if produced.delivered_seq >= events[-1].seq:
                return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        produced.waiters.append((events[-1].seq, done))
        self._dirty[stream_id] = None
        self._write_wake.set()
        await done

    def _wake_all(self) -> None:
        """Wake the writer to look at every produced stream (not only those appended to)."""
        self._rescan = True
        self._write_wake.set()

    async def _write_forever(self) -> None:
        backoff = BACKOFF_MIN_S
        failing = False
        last_started = -math.inf
        while True:
            await self._write_wake.wait()
            # Under load, writes are paced: what every stream appends within the gather window goes in
            # one script call (redis-py's and Redis's cost per call is most of an append's). A write after
            # a quiet spell starts at once, so an idle or lightly loaded server adds no latency.
            pause = last_started + self._gather_s - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            self._write_wake.clear()
            if self._rescan:
                candidates: Iterable[_Produced] = self._produced.values()
                self._rescan = False
            else:
                candidates = [p for sid in self._dirty if (p := self._produced.get(sid)) is not None]
            self._dirty = {}
            work = [p for p in candidates if p.needs_restore or p.durable_seq < p.last_seq]
            if not work:
                continue
            attempt_started = last_started = time.monotonic()
            # One timer per write (not a task): if the write is still unanswered after _stall_s, the
            # outage starts now for this instance's followers.
            stall = asyncio.get_running_loop().call_later(self._stall_s, self._stalled, work, attempt_started)
            try:
                await self._write(work)
            except Exception as exc:  # RedisError, OSError, asyncio's TimeoutError: all mean "not written"
                now = time.monotonic()
                if not failing:
                    logger.warning("redis unreachable for writes: {!r}; holding events and retrying", exc)
                failing = True
                if self._outage_since is None:
                    self._begin_outage(work, attempt_started)
                since = self._outage_since if self._outage_since is not None else attempt_started
                if now - since > self._outage_deadline_s:
                    for produced in work:
                        _fail_waiters(
                            produced,
                            BufferUnavailable(
                                "the shared buffer is unavailable; send again in a moment", stream_id=produced.stream_id
                            ),
                        )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                self._wake_all()  # try again (the events are still here)
                continue
            finally:
                stall.cancel()
            failing = False
            if self._outage_since is not None:
                logger.info(
                    "redis reachable again after {:.1f} s; events written back", time.monotonic() - self._outage_since
                )
                self._outage_since = None
            backoff = BACKOFF_MIN_S

    async def _write(self, work: list[_Produced]) -> None:
        """One script call for every stream with events Redis does not have yet; handle each answer."""
        restores = [p for p in work if p.needs_restore and p.origin is not None]
        for produced in restores:
            await self._restore(produced)
        appends = [p for p in work if p.durable_seq < p.last_seq and not p.needs_restore]
        if not appends:
            return
        batches: list[list[StoredEvent]] = []
        with_origin: list[bool] = []
        args: list[str | int] = [self.owner, self._lease_ms]
        for produced in appends:
            pending = produced.undurable()
            batches.append(pending)
            terminal = "-"
            if pending[-1].terminal and produced.terminal_expire_s:
                terminal = str(produced.terminal_expire_s)
            origin = produced.origin.encode() if produced.origin is not None and not produced.origin_stored else ""
            with_origin.append(bool(origin))
            args.append(f"{produced.stream_id} {len(pending)} {produced.ttl_s} {terminal}")
            args.append(origin)
            args += [f"{e.seq} {e.type} {e.data}" for e in pending]
        try:
            # EVALSHA itself, not the Script object, which costs a SCRIPT EXISTS round trip first
            # whenever it runs in a pipeline.
            results = await self._redis.evalsha(self._append_script.sha, 1, LIVE_KEY, *args)
        except NoScriptError:
            # Redis restarted or flushed its scripts: load it and write again (by seq: nothing twice).
            await self._redis.script_load(_APPEND)
            self._wake_all()
            return
        for produced, pending, stored, result in zip(appends, batches, with_origin, results, strict=True):
            status, last = str(result[0]), int(result[1])
            if status == "ok":
                produced.origin_stored = produced.origin_stored or stored
                self._made_durable(produced, last, pending)
            elif status == "fenced":
                self._lost(produced)
            elif status == "gone":
                if produced.origin is None:
                    _fail_waiters(produced, StreamExpired(f"stream {produced.stream_id} vanished from Redis"))
                    self._forget(produced.stream_id)
                else:
                    logger.bind(stream_id=produced.stream_id).warning("redis lost the stream; writing it back")
                    produced.needs_restore = True
                    self._wake_all()
            elif status == "behind":
                logger.bind(stream_id=produced.stream_id).warning("redis lost the log after seq {}; resending", last)
                produced.durable_seq = last
                self._wake_all()

    def _stalled(self, work: list[_Produced], attempt_started: float) -> None:
        stall = self._stall_s
        if self._outage_since is None:
            logger.warning("redis has not answered a write in {:.1f} s; local followers go on from memory", stall)
            self._begin_outage(work, attempt_started)

    def _begin_outage(self, work: list[_Produced], attempt_started: float) -> None:
        """The outage began when the write that failed (or stalled) was sent, not when it timed out.
        From now on this instance's followers get events from memory, up to the bound."""
        self._outage_since = attempt_started
        for produced in work:
            self._deliver_locally(produced)

    def _deliver_locally(self, produced: _Produced) -> None:
        """In an outage: give this instance's followers the events Redis lacks, up to the bound,
        and let the appends of those events return."""
        limit = produced.durable_seq + LOCAL_AHEAD_MAX_EVENTS
        fresh = [e for e in produced.events if produced.delivered_seq < e.seq <= limit]
        if fresh:
            self._fanout.publish(produced.stream_id, fresh)
            produced.delivered_seq = fresh[-1].seq
            produced.local_at = time.monotonic()
        self._resolve(produced, produced.delivered_seq)

    def _resolve(self, produced: _Produced, upto: int) -> None:
        still: list[tuple[int, asyncio.Future[None]]] = []
        for seq, waiter in produced.waiters:
            if seq <= upto:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                still.append((seq, waiter))
        produced.waiters = still

    def _made_durable(self, produced: _Produced, last: int, written: list[StoredEvent]) -> None:
        produced.durable_seq = max(produced.durable_seq, last)
        if produced.durable_seq >= produced.last_seq:
            produced.behind_since = None
        # Followers on this instance get the events now, from memory (the pub/sub echo is skipped),
        # unless they had them already, ahead of Redis, during an outage.
        fresh = [e for e in written if e.seq > produced.delivered_seq]
        if fresh:
            self._fanout.publish(produced.stream_id, fresh)
        produced.delivered_seq = max(produced.delivered_seq, produced.durable_seq)
        self._resolve(produced, produced.durable_seq)
        if produced.events and produced.events[-1].terminal and produced.durable_seq >= produced.last_seq:
            self._produced.pop(produced.stream_id, None)

    async def _restore(self, produced: _Produced) -> None:
        assert produced.origin is not None
        sid, origin = produced.stream_id, produced.origin
        durable = [e for e in produced.events if e.seq <= produced.durable_seq]
        terminal = ""
        if durable and durable[-1].terminal and produced.terminal_expire_s:
            terminal = str(produced.terminal_expire_s)
        turns = [encode_turn(t) for t in origin.turns]
        result = await self._restore_script(
            keys=[
                _skey(sid),
                _mkey(sid),
                _lkey(sid),
                LIVE_KEY,
                _ckey(origin.conversation_id, "msgs"),
                _ckey(origin.conversation_id, "turns"),
            ],
            args=[
                self.owner,
                self._lease_ms,
                produced.ttl_s,
                terminal,
                sid,
                origin.conversation_id,
                f"{produced.created_at:.3f}",
                origin.encode(),
                origin.client_message_id,
                self._conversation_ttl_s,
                len(turns),
                *turns,
                *_event_args(durable),
            ],
        )
        produced.needs_restore = False
        produced.origin_stored = True
        logger.bind(stream_id=sid).info("wrote back a stream redis had lost ({}): {} events", result, len(durable))
        self._wake_all()

    def _lost(self, produced: _Produced) -> None:
        """Another instance produces this stream now: refuse every write, tell the job."""
        self._forget(produced.stream_id)
        _fail_waiters(produced, LeaseLost(produced.stream_id))
        logger.bind(stream_id=produced.stream_id).warning(
            "lease lost: another instance took over stream {}", produced.stream_id
        )
        if self._lease_lost_handler is not None:
            self._lease_lost_handler(produced.stream_id)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self._lease_ttl_s / 3)
            now = time.time()
            for sid in [
                s for s, p in self._produced.items() if p.origin is None and now - p.created_at > UNSTARTED_FORGET_S
            ]:
                self._forget(sid)  # created, but its client_message_id went to another stream
            started = [p for p in self._produced.values() if p.origin is not None and not p.needs_restore]
            if not started:
                continue
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for produced in started:
                        sid = produced.stream_id
                        await self._renew_script(
                            keys=[_mkey(sid), _lkey(sid), LIVE_KEY], args=[self.owner, self._lease_ms, sid], client=pipe
                        )
                    results = await pipe.execute(raise_on_error=False)
            except Exception:
                continue  # an outage: the writer reports it and writes back when Redis returns
            for produced, result in zip(started, results, strict=True):
                if result == "fenced":
                    self._lost(produced)
                elif result == "gone":
                    logger.bind(stream_id=produced.stream_id).warning("redis lost the stream; writing it back")
                    produced.needs_restore = True
                    self._wake_all()

    # --- producer leases ----------------------------------------------------------------------
    async def orphans(self) -> list[str]:
        try:
            found = await self._orphans_script(keys=[LIVE_KEY], args=[ORPHANS_PER_SWEEP])
        except (RedisError, OSError) as exc:
            raise _unavailable(exc, None) from exc
        return [str(s) for s in found if str(s) not in self._produced]

    async def take_over(self, stream_id: str) -> Orphan | None:
        try:
            raw = await self._take_over_script(
                keys=[_mkey(stream_id), _lkey(stream_id), LIVE_KEY], args=[self.owner, self._lease_ms, stream_id]
            )
            if not raw:
                return None
            meta = dict(zip(raw[::2], raw[1::2], strict=True))
            entries = await self._redis.xrange(_skey(stream_id), min="-", max="+")
        except (RedisError, OSError) as exc:
            raise _unavailable(exc, stream_id) from exc
        events = _events(entries)
        origin = StreamOrigin.decode(meta["origin"])
        created_at = float(meta.get("at", 0))
        ttl_s = self._stream_ttl_s
        produced = _Produced(stream_id, origin.conversation_id, created_at, ttl_s, origin, True, list(events))
        produced.durable_seq = produced.delivered_seq = events[-1].seq if events else 0
        self._produced[stream_id] = produced
        logger.bind(stream_id=stream_id).info("took over stream {} at seq {}", stream_id, produced.durable_seq)
        # The previous producer may have shown its own followers up to LOCAL_AHEAD_MAX_EVENTS events
        # Redis never got (it was cut off from Redis, then died): withdraw whatever they were, so
        # every client, wherever it stopped, continues from the same text.
        text = fold_text(events)
        last = produced.durable_seq
        fillers = [
            encode(RetractEvent(stream_id=stream_id, seq=last + i, reason=FAILOVER_REASON, text=text))
            for i in range(1, LOCAL_AHEAD_MAX_EVENTS + 2)
        ]
        await self.append(stream_id, fillers)
        return Orphan(stream_id, origin, [*events, *fillers], created_at, meta.get("cancel") == "1")

    def on_lease_lost(self, callback: LeaseLostHandler) -> None:
        self._lease_lost_handler = callback

    # --- reading ------------------------------------------------------------------------------
    async def read_after(self, stream_id: str, after_seq: int) -> list[StoredEvent]:
        produced = self._produced.get(stream_id)
        if produced is not None and produced.origin is not None and produced.events:
            # We produce it: our copy is the truth (and survives a Redis restart). Durable events only.
            self._raise_if_down(stream_id)
            upto = max(produced.durable_seq, produced.delivered_seq)
            return [e for e in produced.events if after_seq < e.seq <= upto]
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.exists(_mkey(stream_id))
                pipe.xrange(_skey(stream_id), min=f"{after_seq + 1}-0", max="+")
                exists, entries = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise _unavailable(exc, stream_id) from exc
        if not exists:
            raise StreamExpired(f"stream {stream_id} is not in the buffer (expired or unknown)", stream_id=stream_id)
        return _events(entries)

    def _raise_if_down(self, stream_id: str) -> None:
        """Past the outage deadline even our own streams are unavailable: their followers end with a
        retryable error instead of waiting for events that cannot be stored."""
        produced = self._produced.get(stream_id)
        # Known down (a write failed), or our events have waited for Redis this long already.
        since = self._outage_since
        behind = produced.behind_since if produced is not None else None
        if behind is not None and (since is None or behind < since):
            since = behind
        if since is not None and time.monotonic() - since > self._outage_deadline_s:
            raise BufferUnavailable(
                "the shared buffer is unavailable; resume in a moment", stream_id=stream_id, since=since
            )

    async def stream_info(self, stream_id: str) -> StreamInfo | None:
        produced = self._produced.get(stream_id)
        if produced is not None and produced.origin is not None and produced.events:
            self._raise_if_down(stream_id)
            upto = max(produced.durable_seq, produced.delivered_seq)
            seen = [e for e in produced.events if e.seq <= upto]
            ended = bool(seen) and seen[-1].terminal
            last = seen[-1].seq if ended else None
            return StreamInfo(stream_id, produced.conversation_id, produced.created_at, ended, last)
        try:
            meta = await self._redis.hgetall(_mkey(stream_id))
        except (RedisError, OSError) as exc:
            raise _unavailable(exc, stream_id) from exc
        if not meta:
            return None
        ended = meta.get("end") == "1"
        last = int(meta["last"]) if ended and "last" in meta else None
        return StreamInfo(stream_id, str(meta["c"]), float(meta.get("at", 0)), ended, last)

    async def end_abandoned(self, stream_id: str, code: str, message: str) -> None:
        keys = [_skey(stream_id), _mkey(stream_id), _channel(stream_id), _lkey(stream_id), LIVE_KEY]
        args = [stream_id, code, message, str(self._resume_window_s)]
        try:
            seq = await self._end_abandoned_script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise _unavailable(exc, stream_id) from exc
        produced = self._produced.get(stream_id)
        if seq and produced is not None:
            # Ended under us (we took it over and cannot continue it, or our job is stuck): nothing
            # more may be written, and our followers read its end from Redis.
            self._forget(stream_id)
            _fail_waiters(produced, LeaseLost(stream_id))

    @contextlib.asynccontextmanager
    async def subscribe(self, stream_id: str) -> AsyncIterator[Subscription]:
        sub = Subscription(stream_id, self._subscription_maxsize)
        await self._acquire_channel(stream_id)
        self._fanout.add(sub)
        try:
            yield sub
        finally:
            self._fanout.remove(sub)
            await self._release_channel(stream_id)

    async def _acquire_channel(self, stream_id: str) -> None:
        """Subscribe to the stream's channel when its first local follower arrives, unless this
        instance produces the stream: its followers get its events from memory once Redis has them
        (:meth:`_made_durable`), so the channel would only echo our own appends back to us (Redis
        sending, redis-py parsing and us dropping every event once more). When production moves
        elsewhere (:meth:`_forget`: a takeover fenced us, the stream never started) the followers
        still here are subscribed then, and re-read the log.

        We do not wait for Redis to confirm: the follower reads the log at once, and when the
        confirmation arrives (:meth:`_dispatch`) every follower of that stream is marked lagged and
        re-reads the log, which covers anything published before the subscription was live. So
        hundreds of followers arriving together cost no round trip each. While Redis is down the
        follower is registered anyway (redis-py re-subscribes every channel on reconnect)."""
        async with self._sub_lock:
            self._refs[stream_id] = self._refs.get(stream_id, 0) + 1
            if stream_id in self._subscribed or stream_id in self._produced:
                return
            try:
                await self._subscribe_channel(stream_id)
            except BaseException:
                self._drop_ref(stream_id)
                raise

    async def _subscribe_channel(self, stream_id: str) -> None:
        """Under ``_sub_lock``."""
        self._subscribed.add(stream_id)
        try:
            await self._pubsub.subscribe(_channel(stream_id))
        except (RedisError, OSError):
            self._pubsub.channels[_channel(stream_id)] = None  # re-subscribed on reconnect
        except BaseException:
            self._subscribed.discard(stream_id)
            raise

    def _drop_ref(self, stream_id: str) -> int:
        count = self._refs.get(stream_id, 0) - 1
        if count > 0:
            self._refs[stream_id] = count
        else:
            self._refs.pop(stream_id, None)
        return count

    async def _release_channel(self, stream_id: str) -> None:
        async with self._sub_lock:
            if self._drop_ref(stream_id) > 0 or stream_id not in self._subscribed:
                return
            self._subscribed.discard(stream_id)
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.unsubscribe(_channel(stream_id))

    def _forget(self, stream_id: str) -> None:
        """This instance no longer produces ``stream_id`` (and it did not end here): followers of it
        on this instance, unsubscribed while we produced it, follow it over pub/sub from now on.
        They re-read the log now (from Redis: the stream is no longer ours) and again when the
        subscription is confirmed, so nothing published in between is missed."""
        if self._produced.pop(stream_id, None) is None or not self._refs.get(stream_id):
            return
        self._fanout.mark_lagged(stream_id)
        if stream_id not in self._subscribed:
            task: asyncio.Task[None] = asyncio.create_task(self._subscribe_followed(stream_id))
            self._handler_tasks.add(task)
            task.add_done_callback(self._handler_tasks.discard)

    async def _subscribe_followed(self, stream_id: str) -> None:
        async with self._sub_lock:
            if self._refs.get(stream_id) and stream_id not in self._subscribed and stream_id not in self._produced:
                await self._subscribe_channel(stream_id)

    async def _read_forever(self) -> None:
        backoff = BACKOFF_MIN_S
        task = asyncio.current_task()
        while True:
            try:
                message = await self._pubsub.get_message(timeout=READER_POLL_S)
                backoff = BACKOFF_MIN_S
                if task is not None and task.cancelling():
                    # close() cancelled us while redis-py's read timeout expired: on Python 3.11 the
                    # timeout can swallow that cancel (get_message just returns None), and the loop
                    # would read on for ever (seen after a pub/sub reconnect).
                    raise asyncio.CancelledError
            except (RedisError, OSError) as exc:
                logger.warning("redis reader lost its connection: {!r}; followers will re-read the log", exc)
                self._mark_remote_lagged()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            if message is not None:
                self._dispatch(message)

    def _produces(self, stream_id: str) -> bool:
        produced = self._produced.get(stream_id)
        return produced is not None and produced.origin is not None

    def _mark_remote_lagged(self) -> None:
        """The pub/sub connection dropped: followers of streams produced elsewhere may have missed
        live events. Followers of our own streams are fed from memory, not pub/sub; marking them
        lagged would throw away the events queued for them and send them to re-read a log that, in
        an outage, they cannot read (they would get nothing more before their retryable refusal)."""
        for stream_id in self._fanout.streams():
            if not self._produces(stream_id):
                self._fanout.mark_lagged(stream_id)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind, channel = message["type"], message["channel"]
        if kind == "subscribe":
            stream_id = channel[len(PREFIX) + 3 :]
            if channel != CANCEL_CHANNEL and not self._produces(stream_id):
                # Live from now on: whatever was published before is in the log; re-read it.
                self._fanout.mark_lagged(stream_id)
            return
        if kind != "message":
            return
        if channel == CANCEL_CHANNEL:
            if self._cancel_handler is not None:
                task: asyncio.Task[None] = asyncio.create_task(self._cancel_handler(message["data"]))
                self._handler_tasks.add(task)
                task.add_done_callback(self._handler_tasks.discard)
            return
        data = message["data"]
        if data.startswith(self._own_prefix):
            return  # our own appends reached local followers from memory already: not even decoded
        stream_id = channel[len(PREFIX) + 3 :]
        try:
            _, events = _decode_live(data)
        except ValueError:
            logger.error("malformed live message on {}", channel)
            return
        self._fanout.publish(stream_id, events)

    # --- conversations ------------------------------------------------------------------------
    async def claim_message(self, conversation_id: str, client_message_id: str, stream_id: str) -> str:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                self._claim(pipe, conversation_id, client_message_id, stream_id)
                _, winner, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise _unavailable(exc, stream_id) from exc
        produced = self._produced.get(stream_id)
        if produced is not None and winner != stream_id:
            self._forget(stream_id)  # this stream will never start
        return str(winner)

    def _claim(self, pipe: Any, conversation_id: str, client_message_id: str, stream_id: str) -> None:
        """Queue the claim of ``client_message_id`` for ``stream_id``: three commands, the second
        answers the winner."""
        key = _ckey(conversation_id, "msgs")
        pipe.hsetnx(key, client_message_id, stream_id)
        pipe.hget(key, client_message_id)
        pipe.expire(key, self._conversation_ttl_s)

    async def add_turn(self, conversation_id: str, *turns: Turn) -> None:
        if not turns:
            return
        key = _ckey(conversation_id, "turns")
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(key, *(encode_turn(t) for t in turns))
                pipe.expire(key, self._conversation_ttl_s)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise _unavailable(exc, None) from exc

    async def finish_reply(
        self, conversation_id: str, stream_id: str, text: str, status: ReplyStatus, *, tokens: int | None = None
    ) -> None:
        key = _ckey(conversation_id, "replies")
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                ended = {"text": text, "status": status} | ({} if tokens is None else {"tokens": tokens})
                pipe.hset(key, stream_id, json.dumps(ended))
                pipe.expire(key, self._conversation_ttl_s)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise _unavailable(exc, stream_id) from exc

    async def history(self, conversation_id: str) -> list[Turn]:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.lrange(_ckey(conversation_id, "turns"), 0, -1)
                pipe.hgetall(_ckey(conversation_id, "replies"))
                raw_turns, replies = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise _unavailable(exc, None) from exc
        out: list[Turn] = []
        for raw in raw_turns:
            turn = decode_turn(raw)
            if isinstance(turn, AssistantTurn) and turn.stream_id in replies:
                ended = json.loads(replies[turn.stream_id])
                turn = dataclasses.replace(turn, text=ended["text"], status=ended["status"], tokens=ended.get("tokens"))
            out.append(turn)
        return out

    # --- control ------------------------------------------------------------------------------
    async def request_cancel(self, stream_id: str) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                # Also on the stream: an instance that takes it over later still cancels it.
                pipe.hset(_mkey(stream_id), "cancel", "1")
                pipe.publish(CANCEL_CHANNEL, stream_id)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise _unavailable(exc, stream_id) from exc

    def on_cancel(self, callback: CancelHandler) -> None:
        self._cancel_handler = callback


def _events(entries: Any) -> list[StoredEvent]:
    """XRANGE entries ("{seq}-0", {t, d}) → events."""
    return [StoredEvent(int(str(eid).split("-", 1)[0]), str(f["t"]), str(f["d"])) for eid, f in entries]


def _unavailable(exc: BaseException, stream_id: str | None) -> BufferUnavailable:
    return BufferUnavailable(f"the shared buffer is unavailable ({type(exc).__name__}); try again", stream_id=stream_id)


def _fail_waiters(produced: _Produced, exc: BaseException) -> None:
    for _, waiter in produced.waiters:
        if not waiter.done():
            waiter.set_exception(exc)
    produced.waiters = []
