"""``redis://`` — the shared buffer: any instance can replay and follow any stream.

Layout (prefix ``bc:``)::

    bc:s:{stream_id}          Redis Stream; entry id "{seq}-0", fields t=type, d=json
    bc:s:{stream_id}:m        hash: c=conversation_id, at=created (epoch s), end=1 and last=seq once terminal
    bc:ch:{stream_id}         pub/sub channel: live events, one "seq type json" line each
    bc:c:{conv}:msgs          hash: client_message_id -> stream_id (idempotent sends)
    bc:c:{conv}:turns         list of JSON turns
    bc:c:{conv}:replies       hash: stream_id -> {"text", "status"} once the reply ended
    bc:cancel                 pub/sub channel: stream ids whose generation should stop

Why the entry id is the seq: ``XADD`` refuses an id not above the last one, so a second writer
can never interleave, and "events after N" is a plain ``XRANGE (N+1)-0 +``. Appends after the
first use ``NOMKSTREAM``: if Redis lost the stream (restart without persistence) the writer is
told instead of silently re-creating a stream with a missing head.

Live delivery costs one pub/sub connection per instance, not one per follower: the reader task
subscribes to a stream's channel when its first local follower arrives (ref-counted) and fans
events out in memory (:mod:`streaming.fanout`). redis-py's asyncio ``PubSub`` allows
``subscribe()`` from one task while another awaits ``get_message()`` on the same connection
(commands are written, replies arrive as messages), which is what encode/broadcaster relies on
too. A follower reads the log without waiting for the subscription to be confirmed; when the
confirmation arrives its followers re-read the log once, so nothing published in between is lost.
On a reader reconnect every follower is marked lagged and re-reads the log, too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from loguru import logger
from redis.exceptions import RedisError

from streaming.contract import (
    AssistantTurn,
    BufferOptions,
    CancelHandler,
    ReplyStatus,
    StreamInfo,
    Turn,
    decode_turn,
    encode_turn,
)
from streaming.events import StoredEvent
from streaming.exceptions import StreamExpired
from streaming.fanout import Fanout, Subscription

PREFIX = "bc:"
CANCEL_CHANNEL = PREFIX + "cancel"


def _skey(stream_id: str) -> str:
    return f"{PREFIX}s:{stream_id}"


def _mkey(stream_id: str) -> str:
    return f"{PREFIX}s:{stream_id}:m"


def _channel(stream_id: str) -> str:
    return f"{PREFIX}ch:{stream_id}"


def _ckey(conversation_id: str, part: str) -> str:
    return f"{PREFIX}c:{conversation_id}:{part}"


def _encode_live(events: Sequence[StoredEvent]) -> str:
    return "\n".join(f"{e.seq} {e.type} {e.data}" for e in events)


def _decode_live(payload: str) -> list[StoredEvent]:
    out = []
    for line in payload.split("\n"):
        seq, kind, data = line.split(" ", 2)
        out.append(StoredEvent(int(seq), kind, data))
    return out


# Ends a stream whose writer is gone: atomic, so racing followers add one terminal event at most.
_END_ABANDONED = """
if redis.call('EXISTS', KEYS[2]) == 0 or redis.call('HGET', KEYS[2], 'end') == '1' then return 0 end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local seq = 1
if #last > 0 then seq = tonumber(string.match(last[1][1], '^(%d+)')) + 1 end
local data = cjson.encode({type='error', stream_id=ARGV[1], seq=seq, code=ARGV[2], message=ARGV[3], retryable=true})
redis.call('XADD', KEYS[1], seq .. '-0', 't', 'error', 'd', data)
redis.call('HSET', KEYS[2], 'end', '1', 'last', seq)
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', KEYS[3], seq .. ' error ' .. data)
return seq
"""


@dataclass
class _Append:
    stream_id: str
    events: list[StoredEvent]
    expire_after_s: int | None
    done: asyncio.Future[None]


# Bounded pool: a burst waits (at most POOL_WAIT_S) for a connection instead of opening thousands.
# Appends of every stream share one pipeline, so a busy instance needs few connections.
POOL_MAX_CONNECTIONS = 64
POOL_WAIT_S = 5.0
# Until the first stream is created and tells the writer its lifetime (deadline + resume window).
INITIAL_STREAM_TTL_S = 3600
# The pub/sub reader's reconnect backoff after Redis went away, doubling from min to max.
READER_BACKOFF_MIN_S = 0.05
READER_BACKOFF_MAX_S = 2.0
# How long one pub/sub read waits before looping (lets cancellation and reconnects in).
READER_POLL_S = 1.0


class RedisBuffer:
    def __init__(self, url: str, options: BufferOptions) -> None:
        self.url = url
        self._conversation_ttl_s = options.conversation_ttl_s
        self._resume_window_s = options.resume_window_s
        self._subscription_maxsize = options.subscription_maxsize
        self._pool = aioredis.BlockingConnectionPool.from_url(
            url, decode_responses=True, max_connections=POOL_MAX_CONNECTIONS, timeout=POOL_WAIT_S
        )
        self._redis = aioredis.Redis(connection_pool=self._pool)
        self._pubsub = self._redis.pubsub()
        self._fanout = Fanout()
        self._refs: dict[str, int] = {}
        self._sub_lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._cancel_handler: CancelHandler | None = None
        self._handler_tasks: set[asyncio.Task[None]] = set()
        self._appends: list[_Append] = []
        self._append_wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._stream_ttl_s = INITIAL_STREAM_TTL_S

    # --- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        await self._redis.ping()
        await self._pubsub.subscribe(CANCEL_CHANNEL)
        self._reader = asyncio.create_task(self._read_forever(), name="redis-buffer-reader")
        self._writer = asyncio.create_task(self._write_forever(), name="redis-buffer-writer")

    async def close(self) -> None:
        for task in (self._reader, self._writer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._reader = self._writer = None
        for item in self._appends:
            if not item.done.done():
                item.done.set_exception(ConnectionError("the Redis buffer is closed"))
        self._appends = []
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._redis.aclose()
        await self._pool.disconnect()

    async def ping(self) -> None:
        await self._redis.ping()

    # --- streams ------------------------------------------------------------------------------
    async def create_stream(self, stream_id: str, conversation_id: str, ttl_s: int) -> None:
        mkey = _mkey(stream_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(mkey, mapping={"c": conversation_id, "at": f"{time.time():.3f}"})
            pipe.expire(mkey, ttl_s)
            await pipe.execute()
        # Every stream gets the same lifetime (deadline + resume window); the stream key, born on
        # the first append, takes the latest value seen here.
        self._stream_ttl_s = ttl_s

    async def append(self, stream_id: str, events: Sequence[StoredEvent], *, expire_after_s: int | None = None) -> None:
        """Queue the events for the instance-wide writer and wait until Redis has them.

        Appends from every stream on this instance are written together: while one pipeline is in
        flight the next batch gathers, so a busy instance sends one round trip for many streams
        (redis-py spends far more CPU per pipeline than per command). One writer per stream (the
        job) awaits each append before the next, so per-stream order is kept."""
        if not events:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._appends.append(_Append(stream_id, list(events), expire_after_s, done))
        self._append_wake.set()
        await done

    async def _write_forever(self) -> None:
        while True:
            await self._append_wake.wait()
            self._append_wake.clear()
            batch, self._appends = self._appends, []
            if batch:
                await self._write(batch)

    async def _write(self, batch: list[_Append]) -> None:
        spans: list[tuple[int, int]] = []
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for item in batch:
                    skey, mkey = _skey(item.stream_id), _mkey(item.stream_id)
                    spans.append((len(pipe), len(item.events)))
                    for event in item.events:
                        pipe.xadd(
                            skey, {"t": event.type, "d": event.data}, id=f"{event.seq}-0", nomkstream=event.seq > 1
                        )
                    if item.events[0].seq == 1:
                        # The stream key is born with the meta key's lifetime.
                        pipe.expire(skey, self._stream_ttl_s)
                    if item.expire_after_s is not None:
                        pipe.hset(mkey, mapping={"end": "1", "last": item.events[-1].seq})
                        pipe.expire(skey, item.expire_after_s)
                        pipe.expire(mkey, item.expire_after_s)
                    pipe.publish(_channel(item.stream_id), _encode_live(item.events))
                results = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            for item in batch:
                if not item.done.done():
                    item.done.set_exception(exc)
            return
        for item, (start, count) in zip(batch, spans, strict=True):
            if item.done.done():
                continue  # its caller was cancelled
            written = results[start : start + count]
            error = next((r for r in written if isinstance(r, Exception)), None)
            if error is not None:
                item.done.set_exception(error)
            elif any(r is None for r in written):
                item.done.set_exception(
                    StreamExpired(f"stream {item.stream_id} vanished from Redis", stream_id=item.stream_id)
                )
            else:
                item.done.set_result(None)

    async def read_after(self, stream_id: str, after_seq: int) -> list[StoredEvent]:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.exists(_mkey(stream_id))
            pipe.xrange(_skey(stream_id), min=f"{after_seq + 1}-0", max="+")
            exists, entries = await pipe.execute()
        if not exists:
            raise StreamExpired(f"stream {stream_id} is not in the buffer (expired or unknown)", stream_id=stream_id)
        return [StoredEvent(int(eid.split("-", 1)[0]), f["t"], f["d"]) for eid, f in entries]

    async def stream_info(self, stream_id: str) -> StreamInfo | None:
        meta = await self._redis.hgetall(_mkey(stream_id))
        if not meta:
            return None
        ended = meta.get("end") == "1"
        last = int(meta["last"]) if ended and "last" in meta else None
        return StreamInfo(stream_id, str(meta["c"]), float(meta.get("at", 0)), ended, last)

    async def end_abandoned(self, stream_id: str, code: str, message: str) -> None:
        keys = [_skey(stream_id), _mkey(stream_id), _channel(stream_id)]
        args = [stream_id, code, message, str(self._resume_window_s)]
        await self._redis.eval(_END_ABANDONED, len(keys), *keys, *args)

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
        """Subscribe to the stream's channel when its first local follower arrives.

        We do not wait for Redis to confirm: the follower reads the log at once, and when the
        confirmation arrives (:meth:`_dispatch`) every follower of that stream is marked lagged and
        re-reads the log, which covers anything published before the subscription was live. So
        hundreds of followers arriving together cost no round trip each."""
        async with self._sub_lock:
            count = self._refs.get(stream_id, 0)
            self._refs[stream_id] = count + 1
            if count == 0:
                try:
                    await self._pubsub.subscribe(_channel(stream_id))
                except BaseException:
                    self._drop_ref(stream_id)
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
            if self._drop_ref(stream_id) > 0:
                return
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.unsubscribe(_channel(stream_id))

    async def _read_forever(self) -> None:
        backoff = READER_BACKOFF_MIN_S
        while True:
            try:
                message = await self._pubsub.get_message(timeout=READER_POLL_S)
                backoff = READER_BACKOFF_MIN_S
            except (RedisError, OSError) as exc:
                logger.warning("redis reader lost its connection: {!r}; followers will re-read the log", exc)
                self._fanout.mark_all_lagged()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, READER_BACKOFF_MAX_S)
                continue
            if message is not None:
                self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind, channel = message["type"], message["channel"]
        if kind == "subscribe":
            if channel != CANCEL_CHANNEL:
                # Live from now on: whatever was published before is in the log; re-read it.
                self._fanout.mark_lagged(channel[len(PREFIX) + 3 :])
            return
        if kind != "message":
            return
        if channel == CANCEL_CHANNEL:
            if self._cancel_handler is not None:
                task: asyncio.Task[None] = asyncio.create_task(self._cancel_handler(message["data"]))
                self._handler_tasks.add(task)
                task.add_done_callback(self._handler_tasks.discard)
            return
        stream_id = channel[len(PREFIX) + 3 :]
        try:
            events = _decode_live(message["data"])
        except ValueError:
            logger.error("malformed live message on {}", channel)
            return
        self._fanout.publish(stream_id, events)

    # --- conversations ------------------------------------------------------------------------
    async def claim_message(self, conversation_id: str, client_message_id: str, stream_id: str) -> str:
        key = _ckey(conversation_id, "msgs")
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(key, client_message_id, stream_id)
            pipe.hget(key, client_message_id)
            pipe.expire(key, self._conversation_ttl_s)
            _, winner, _ = await pipe.execute()
        return str(winner)

    async def add_turn(self, conversation_id: str, turn: Turn) -> None:
        key = _ckey(conversation_id, "turns")
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, encode_turn(turn))
            pipe.expire(key, self._conversation_ttl_s)
            await pipe.execute()

    async def finish_reply(self, conversation_id: str, stream_id: str, text: str, status: ReplyStatus) -> None:
        key = _ckey(conversation_id, "replies")
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, stream_id, json.dumps({"text": text, "status": status}))
            pipe.expire(key, self._conversation_ttl_s)
            await pipe.execute()

    async def history(self, conversation_id: str) -> list[Turn]:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.lrange(_ckey(conversation_id, "turns"), 0, -1)
            pipe.hgetall(_ckey(conversation_id, "replies"))
            raw_turns, replies = await pipe.execute()
        out: list[Turn] = []
        for raw in raw_turns:
            turn = decode_turn(raw)
            if isinstance(turn, AssistantTurn) and turn.stream_id in replies:
                ended = json.loads(replies[turn.stream_id])
                turn = dataclasses.replace(turn, text=ended["text"], status=ended["status"])
            out.append(turn)
        return out

    # --- control ------------------------------------------------------------------------------
    async def request_cancel(self, stream_id: str) -> None:
        await self._redis.publish(CANCEL_CHANNEL, stream_id)

    def on_cancel(self, callback: CancelHandler) -> None:
        self._cancel_handler = callback
