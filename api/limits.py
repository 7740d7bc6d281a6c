"""Limits: what one client, one brand or one instance may take, and the answer when it asks for more.

=================================  ===============================  ======================================
limit                              setting                           answer
=================================  ===============================  ======================================
running replies per conversation   (always 1)                        ``conversation_busy`` (409 / WS error)
replies started per address        ``RATE_REPLIES_PER_MIN``          ``rate_limited`` (429 + Retry-After)
negotiates per address             ``RATE_NEGOTIATES_PER_MIN``       ``rate_limited``
running replies per brand          ``MAX_RUNNING_REPLIES_PER_BRAND``  ``rate_limited``
running replies per instance       ``MAX_RUNNING_REPLIES``            ``rate_limited``
open connections per address       ``MAX_CONNECTIONS_PER_ADDRESS``    429 (SSE) / close 4429 (WS)
=================================  ===============================  ======================================

The counts live in a :class:`~api.limit_store.LimitStore`: in process for ``memory://``, in Redis
for ``redis://`` so they hold across instances (the instance cap is the one count that is local by
definition). Every held place has a lease, so a crashed instance's places come back by themselves.

A running reply holds its places (conversation, brand, instance) from the send until its stream
ends: :meth:`Limits.end_stream` gives them back just *before* the terminal event is written (the
job manager's ``before_end``), so a client that sends its next message the moment it reads ``done``
never finds the conversation busy; :meth:`Limits.on_hook` (``stream_ended``) is the backstop. If
neither comes (the instance died, the buffer failed at the end), the lease ends them:
``UPSTREAM_TOTAL_DEADLINE_S`` + ``SHUTDOWN_GRACE_S`` + :data:`REPLY_LEASE_MARGIN_S`.

A re-sent message (same ``client_message_id``, e.g. after a reconnect) is never refused as busy:
the conversation's place records which message holds it, and the send goes on to the job manager,
which answers with the stream that message already started.

The client address is the socket's peer, or, only when that peer is one of ``TRUSTED_PROXIES``, the
right-most address of ``X-Forwarded-For`` that is not itself a trusted proxy (the left-most entries
are whatever the client wrote). IPv6 addresses count per /64, what one subscriber usually holds.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from api.exceptions import ConversationBusy, LimitsUnavailable, RateLimited
from api.limit_store import LimitStore, ReplyCheck

# A reply's places outlive its deadlines by this much before the lease frees them on its own.
REPLY_LEASE_MARGIN_S = 30.0
# When a running-replies cap is full, suggest trying again after this long (replies take seconds).
BUSY_RETRY_MS = 2_000
# When an address has too many connections open, suggest trying again after this long.
CONNECTIONS_RETRY_MS = 5_000
# A connection's place outlives the token it is bound to (a WebSocket is closed at token expiry)
# by this much; a crashed instance's connections stop counting after that.
CONNECTION_LEASE_MARGIN_S = 120.0
# IPv6 addresses are counted per network of this size.
IPV6_PREFIX = 64
WINDOW_S = 60.0

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class LimitOptions:
    replies_per_min: int  # replies started per client address per minute
    negotiates_per_min: int  # negotiates per client address per minute
    running_per_brand: int  # running replies per brand, across instances
    running_per_instance: int  # running replies on this instance
    connections_per_address: int  # open WebSocket + SSE connections per client address
    reply_lease_s: float  # how long a reply's places are held at most
    connection_lease_s: float  # how long a connection's place is held at most
    trusted_proxies: tuple[Network, ...]


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """``TRUSTED_PROXIES`` entries (addresses or CIDR networks) → networks; raises ValueError."""
    return tuple(ipaddress.ip_network(e.strip(), strict=False) for e in entries if e.strip())


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "203.0.113.9:5000"
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def client_address(peer: str | None, headers: Mapping[str, str], trusted: tuple[Network, ...]) -> str:
    """The address limits count against (see the module docstring). Always a normalised address or
    network text, never header bytes as they came, so it is safe in a Redis key."""
    ip = _parse_ip(peer or "")
    if ip is None:
        return "unknown"
    if trusted and any(ip in net for net in trusted):
        forwarded = headers.get("x-forwarded-for", "")
        for hop in reversed([h for h in forwarded.split(",") if h.strip()]):
            hop_ip = _parse_ip(hop)
            if hop_ip is None:
                break  # garbage from the client's side of the chain: keep the last good hop
            ip = hop_ip
            if not any(hop_ip in net for net in trusted):
                break
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/{IPV6_PREFIX}", strict=False))
    return str(ip)


@dataclass(eq=False)
class ReplyPlaces:
    """The places one reply holds; :meth:`Limits.started` binds them to its stream."""

    address: str
    brand: str
    member: str
    conversation_key: str | None = None
    client_message_id: str | None = None
    brand_held: bool = False
    instance_held: bool = False
    released: bool = field(default=False)


class Limits:
    def __init__(self, store: LimitStore, options: LimitOptions) -> None:
        self.store = store
        self.options = options
        self.running_here = 0
        self._by_stream: dict[str, ReplyPlaces] = {}
        self._background: set[asyncio.Task[None]] = set()

    def address(self, peer: str | None, headers: Mapping[str, str]) -> str:
        return client_address(peer, headers, self.options.trusted_proxies)

    async def negotiate(self, address: str) -> None:
        """Count a negotiate; raises :class:`RateLimited`.

        While the limits' store is unreachable a negotiate is let through uncounted: it costs a
        signature, and a client needs a token to come back to the instance serving its reply; every
        reply it asks for is still refused (``buffer_unavailable``) until the store returns."""
        try:
            wait_ms = await self.store.hit(f"neg:{address}", self.options.negotiates_per_min, WINDOW_S)
        except LimitsUnavailable as exc:
            logger.warning("negotiate limit not checked: {!r}", exc)
            return
        if wait_ms:
            raise RateLimited("too many new conversations from your address; try again shortly", retry_after_ms=wait_ms)

    async def begin_reply(
        self, *, address: str, brand: str, conversation_id: str | None, client_message_id: str | None
    ) -> ReplyPlaces:
        """Take the places a new reply needs, in order: the conversation's (re-sends pass), the
        address's rate, the instance's and the brand's running caps. Raises :class:`ConversationBusy`
        or :class:`RateLimited`, holding nothing. Pass the result to :meth:`started` or :meth:`release`."""
        opts = self.options
        places = ReplyPlaces(address=address, brand=brand, member=secrets.token_hex(8))
        claiming = conversation_id is not None and client_message_id is not None
        # The instance's own cap is counted here; the rest is one step of the store (one Redis call).
        busy = self.running_here >= opts.running_per_instance
        if not busy:
            self.running_here += 1
            places.instance_held = True
        check = ReplyCheck(
            claim_key=f"conv:{conversation_id}" if claiming else None,
            claim_value=client_message_id or "",
            claim_lease_s=opts.reply_lease_s,
            rate_key=f"replies:{address}",
            rate_limit=opts.replies_per_min,
            rate_window_s=WINDOW_S,
            busy=busy,
            place_key=f"brand:{brand}",
            member=places.member,
            place_limit=opts.running_per_brand,
            place_lease_s=opts.reply_lease_s,
        )
        try:
            status, value = await self.store.begin(check)
        except BaseException:
            await self.release(places)  # the store holds nothing for us (or its lease frees it)
            raise
        if status != "ok":
            await self.release(places)  # the store let go of whatever it took
            if status == "claimed":
                raise ConversationBusy("a reply of this conversation is still running; send again when it ends")
            if status == "rate":
                wait_ms = int(value or 1)
                raise RateLimited("too many messages from your address; try again shortly", retry_after_ms=wait_ms)
            if status == "busy":
                raise RateLimited("this server is busy; try again shortly", retry_after_ms=BUSY_RETRY_MS)
            raise RateLimited("too many conversations are running; try again shortly", retry_after_ms=BUSY_RETRY_MS)
        if check.claim_key is not None:
            places.conversation_key, places.client_message_id = check.claim_key, client_message_id
        places.brand_held = True
        return places

    def started(self, places: ReplyPlaces, stream_id: str, *, created: bool) -> None:
        """The send started ``stream_id`` (``created``) or found the stream its message had started:
        keep the places until that stream ends, or give them back now."""
        if created:
            self._by_stream[stream_id] = places
        else:
            self._release_soon(places)

    async def release(self, places: ReplyPlaces) -> None:
        if places.released:
            return
        places.released = True
        if places.instance_held:
            self.running_here -= 1
        place = (f"brand:{places.brand}", places.member) if places.brand_held else None
        claim = None
        if places.conversation_key and places.client_message_id:
            claim = (places.conversation_key, places.client_message_id)
        try:
            await self.store.give_back(place, claim)  # one step (one Redis call) for both
        except Exception as exc:  # the lease frees them anyway
            logger.warning("could not release a reply's limits ({!r}); their lease will", exc)

    def _release_soon(self, places: ReplyPlaces) -> None:
        self._soon(self.release(places))

    def _soon(self, release: Coroutine[Any, Any, None]) -> None:
        """Give places back from sync code (a hook, a close callback) without waiting for the store."""
        task = asyncio.get_running_loop().create_task(release)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def end_stream(self, stream_id: str) -> None:
        """``stream_id`` is about to write its terminal event: give its places back first, so a client
        that sends its next message the moment it reads ``done`` never finds the conversation busy
        (``GenerationManager``'s ``before_end``). A stream this instance holds no places for (adopted
        after a failover, or already given back) is a no-op."""
        places = self._by_stream.pop(stream_id, None)
        if places is not None:
            await self.release(places)

    def on_hook(self, event: str, fields: dict[str, Any]) -> None:
        """A monitoring hook (``api/hooks.py``): a stream that ended gives its places back (when
        ``end_stream`` could not, e.g. the terminal event was written by another path)."""
        if event == "stream_ended":
            places = self._by_stream.pop(str(fields.get("stream_id")), None)
            if places is not None:
                self._release_soon(places)

    async def open_connection(self, address: str) -> str | None:
        """Hold a connection place for ``address``; the member to give back to :meth:`close_connection`.
        Raises :class:`RateLimited`.

        While the limits' store (Redis) is unreachable the connection is let in uncounted (``None``):
        during an outage a client must still reach the instance that produces its reply (it serves
        the stream from memory), and every send it makes is refused with ``buffer_unavailable``
        anyway. Connections are cheap to hold; replies, which cost the brand money, stay limited."""
        member = secrets.token_hex(8)
        opts = self.options
        try:
            acquired = await self.store.acquire(
                f"conn:{address}", member, opts.connections_per_address, opts.connection_lease_s
            )
        except LimitsUnavailable as exc:
            logger.warning("connection limit not checked: {!r}", exc)
            return None
        if not acquired:
            raise RateLimited("too many open connections from your address", retry_after_ms=CONNECTIONS_RETRY_MS)
        return member

    async def close_connection(self, address: str, member: str | None) -> None:
        if member is None:
            return
        try:
            await self.store.release(f"conn:{address}", member)
        except Exception as exc:
            logger.warning("could not release a connection's limit ({!r}); its lease will", exc)

    def close_connection_soon(self, address: str, member: str | None) -> None:
        self._soon(self.close_connection(address, member))

    async def close(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.store.close()
