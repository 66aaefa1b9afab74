"""The asyncio client: the same semantics as :class:`bester.Client`, as coroutines.

::

    import asyncio, bester.aio

    async def main():
        async with await bester.aio.connect("bester://alice:secret@localhost:2222") as client:
            print(await client.request("echo", {"hello": "world"}))
            async for push in client.pushes():
                print(push.type, push.data)

    asyncio.run(main())

One reader task per connection resolves the futures of replies by id; one manager task
reconnects with backoff (logging in again with the resume token), sends ``bester.ping`` when the
line is quiet, renews the resume token and follows redirects.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import random
import ssl
import time
from typing import Any, AsyncIterator, Callable, Deque, Dict, List, Optional, Tuple, Union

from .acks import DELIVER, MAX_ACK, MAX_SEEN, Seen, ack_ids
from .client import Push, after_loss, answer, in_flight_error, message, open_session, route, too_large
from .errors import FATAL_LOGIN, FINAL, BesterError, Closed, ConnectionLost, Timeout, error_for, from_frame
from .session import Credentials, Login, Session, check_redirect, load_key, redirect_target, retry_with_next
from .transport import client_certificate, open_stream
from .wire import MAX_FRAME, Codec, Url, WsCodec, carries_secret, dumps, loads

log = logging.getLogger("bester.aio")


class _Call:
    __slots__ = ("future", "frame", "hops")

    def __init__(self, future: "asyncio.Future[Dict[str, Any]]", frame: Dict[str, Any]):
        self.future = future
        self.frame = frame
        self.hops = 0


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, codec: Codec, url: Url, early: list):
        self.reader = reader
        self.writer = writer
        self.codec = codec
        self.url = url
        self.early = early
        self.pending: Dict[str, _Call] = {}
        self.dead = False
        self.retiring = False
        self.redirected = False  # the server redirected the client: it closes this connection
        self.closing_error: Optional[BesterError] = None
        self.last_send = time.monotonic()
        self.ping: Optional[asyncio.Future] = None
        self.ping_deadline = 0.0
        self.task: Optional[asyncio.Task] = None
        self.out = bytearray()
        self.flush_scheduled = False

    def write(self, data: bytes) -> None:
        # The first frame of a turn of the event loop leaves at once (the server starts on it);
        # the others written in the same turn leave together in one write after it.
        if self.flush_scheduled:
            self.out += data
            return
        self.flush_scheduled = True
        asyncio.get_running_loop().call_soon(self.flush)
        if not self.writer.is_closing():
            self.writer.write(data)
            self.last_send = time.monotonic()

    def flush(self) -> None:
        self.flush_scheduled = False
        if self.out and not self.writer.is_closing():
            self.writer.write(bytes(self.out))
            self.last_send = time.monotonic()
        self.out.clear()

    def kill(self) -> None:
        self.dead = True
        self.writer.close()


def _settle(future: asyncio.Future, result: Any = None, error: Optional[BaseException] = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class AsyncClient:
    """A logged-in connection for asyncio. Make one with :func:`bester.aio.connect`; the
    options are those of :class:`bester.Client`."""

    def __init__(
        self,
        url: str,
        *,
        username: Optional[str] = None,
        password: Optional[str] = None,
        token: Optional[str] = None,
        key: Any = None,
        server_name: Optional[str] = None,
        ca: Optional[str] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
        cert: Optional[Union[str, Tuple[str, str]]] = None,
        authentication: Optional[Dict[str, Any]] = None,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
        keepalive: Optional[float] = 60.0,
        reconnect: bool = True,
        backoff: float = 0.1,
        max_backoff: float = 10.0,
        on_push: Optional[Callable[[Push], Any]] = None,
        max_pushes: int = 10000,
        max_frame: int = MAX_FRAME,
        max_request: int = 1 << 20,
        max_write_buffer: int = 1 << 20,
        auto_ack: bool = True,
        max_seen: int = MAX_SEEN,
        compress: bool = False,
    ):
        self.session, ssl_context = open_session(
            url, username=username, password=password, token=token, key=key, server_name=server_name,
            ca=ca, ssl_context=ssl_context, cert=cert, authentication=authentication,
        )
        if compress:  # offered at every login; used where the server accepts it (TCP and TLS)
            self.session.offer = ["compress"]
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.reconnect = reconnect
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.on_push = on_push
        self.max_pushes = max_pushes
        self.max_write_buffer = max_write_buffer
        self.auto_ack = auto_ack
        self._seen = Seen(max_seen)  # stored pushes' ids handed over, across reconnections
        self._ack_scheduled = False
        self._ca = ca
        self._ssl = ssl_context
        self._max_frame = max_frame
        self.max_request = max_request
        self._ids = itertools.count(1)
        self._conn: Optional[_Conn] = None
        self._closed = False
        self._error: Optional[BesterError] = None
        self._changed = asyncio.Event()  # set whenever the connection state changes
        self._need_reconnect = False
        self._redirects: List[tuple] = []
        self._renewing = False
        self._pushes: Deque[Push] = collections.deque()
        self._push_event = asyncio.Event()
        self._manager: Optional[asyncio.Task] = None
        self._tasks: set = set()
        self.connections = 0

    # -- public API ---------------------------------------------------------------------------

    async def connect(self) -> "AsyncClient":
        conn = await self._establish(self.session.logins())
        self._install(conn)
        self._manager = asyncio.ensure_future(self._manage())
        return self

    @property
    def features(self) -> List[str]:
        """The features the server accepted at the last login (``data.features``)."""
        return list(self.session.features)

    @property
    def limits(self) -> Dict[str, Any]:
        """The session's limits the server named at the last login (``data.limits``; empty when
        nothing was offered)."""
        return dict(self.session.limits)

    @property
    def user(self) -> Optional[str]:
        return self.session.user

    @property
    def server(self) -> Optional[str]:
        return self.session.server

    @property
    def connected(self) -> bool:
        return self._conn is not None

    async def send(self, type_: str, data: Any = None, timeout: Optional[float] = None) -> "asyncio.Future[Dict[str, Any]]":
        """Send without waiting for the answer: a future of the whole reply frame. Waits (up to
        ``timeout``) while reconnecting, and while the socket's write buffer is full."""
        id_ = str(next(self._ids))
        call = _Call(asyncio.get_running_loop().create_future(), message(id_, type_, data))
        await self._dispatch_call(call, time.monotonic() + (self.timeout if timeout is None else timeout))
        return call.future

    async def request_frame(self, type_: str, data: Any = None, timeout: Optional[float] = None) -> Dict[str, Any]:
        timeout = self.timeout if timeout is None else timeout
        future = await self.send(type_, data, timeout)
        if future.done():
            return future.result()

        def expire() -> None:
            if not future.done():
                self._forget(future)
                future.set_exception(Timeout("timeout", f"no answer to {type_!r} within {timeout:g} s"))

        timer = asyncio.get_running_loop().call_later(timeout, expire)
        try:
            return await future
        finally:
            timer.cancel()

    async def request(self, type_: str, data: Any = None, timeout: Optional[float] = None) -> Any:
        """Send a message of ``type_`` and return the reply's data, or raise the typed error."""
        return (await self.request_frame(type_, data, timeout)).get("data")

    async def ping(self, timeout: Optional[float] = None) -> None:
        await self.request("bester.ping", None, timeout)

    async def whoami(self) -> Dict[str, Any]:
        return await self.request("bester.whoami")

    async def refresh(self, token: str) -> Dict[str, Any]:
        """``bester.refresh``: see :meth:`bester.Client.refresh`."""
        data = await self.request("bester.refresh", {"token": token})
        self.session.refreshed(token, data)
        return data

    async def next_push(self, timeout: Optional[float] = None) -> Optional[Push]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._pushes:
            if self._closed:
                return None
            self._push_event.clear()
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            try:
                await asyncio.wait_for(self._push_event.wait(), left)
            except asyncio.TimeoutError:
                return None
        push = self._pushes.popleft()
        if push.msg is not None and self.auto_ack:
            self._owe(push.msg)
        return push

    async def ack(self, *msgs: Union[Push, str], timeout: Optional[float] = None) -> int:
        """``bester.ack`` for these stored pushes (or ``msg`` ids): see :meth:`bester.Client.ack`."""
        ids = ack_ids(msgs)
        self._seen.acked(ids)
        acked = 0
        for at in range(0, len(ids), MAX_ACK):
            acked += (await self.request("bester.ack", {"msgs": ids[at:at + MAX_ACK]}, timeout) or {}).get("acked", 0)
        return acked

    async def pushes(self, timeout: Optional[float] = None) -> AsyncIterator[Push]:
        """Pushes as they come; ends when the client closes or after ``timeout`` without one."""
        while True:
            push = await self.next_push(timeout)
            if push is None:
                return
            yield push

    async def logout(self) -> None:
        try:
            await self.request("bester.logout")
        except (ConnectionLost, Closed):
            pass
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._error = self._error or Closed("closed", "the client was closed")
        self._changed.set()
        self._push_event.set()
        conn = self._conn
        if conn:
            if isinstance(conn.codec, WsCodec) and not conn.writer.is_closing():
                conn.flush()
                conn.writer.write(conn.codec.close_frame(1000))  # the WebSocket closing handshake
            conn.kill()
            if conn.task:
                await asyncio.gather(conn.task, return_exceptions=True)
        if self._manager:
            self._manager.cancel()
            await asyncio.gather(self._manager, return_exceptions=True)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- sending ------------------------------------------------------------------------------

    async def _wait_changed(self, left: float) -> None:
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), left)
        except asyncio.TimeoutError:
            pass

    async def _dispatch_call(self, call: _Call, deadline: float) -> None:
        id_ = call.frame["header"]["id"]
        try:
            data = None
            while True:
                while self._conn is None or self._conn.dead:
                    if self._closed or self._error:
                        err = self._error or Closed("closed", "the client is closed")
                        _settle(call.future, error=error_for(err.code, err.text, err.frame))  # a fresh one each
                        return
                    left = deadline - time.monotonic()
                    if left <= 0:
                        _settle(call.future, error=Timeout("timeout", "not connected: still reconnecting"))
                        return
                    await self._wait_changed(left)
                conn = self._conn
                if data is None:
                    body = dumps(call.frame)
                    if len(body) > self.max_request:
                        _settle(call.future, error=too_large(len(body), self.max_request))
                        return
                    data = conn.codec.encode(body, secret=carries_secret(call.frame))
                conn.pending[id_] = call
                conn.write(data)
                if len(conn.out) > self.max_write_buffer:
                    conn.flush()
                if conn.writer.transport.get_write_buffer_size() > self.max_write_buffer:
                    try:
                        await conn.writer.drain()
                    except (OSError, RuntimeError):
                        pass  # the reader notices and fails (or the next connection resends) it
                return
        except (TypeError, ValueError) as e:
            _settle(call.future, error=error_for("invalid_message", f"data is not JSON: {e}"))

    def _forget(self, future: asyncio.Future) -> None:
        conn = self._conn
        if conn:
            for id_, call in list(conn.pending.items()):
                if call.future is future:
                    del conn.pending[id_]

    # -- connecting ---------------------------------------------------------------------------

    async def _establish(self, logins: List[Login]) -> _Conn:
        if not logins:
            raise error_for("resume_expired", "no resume token left to log in again with, and no credentials for this server")
        hops = 0
        i = 0
        while True:
            login = logins[i]
            url = self.session.url
            reader, writer, codec, early = await open_stream(url, self.connect_timeout, self._ca, self._ssl, self._max_frame)
            try:
                outcome, value, rest = await asyncio.wait_for(self._login(reader, writer, codec, early, login), self.connect_timeout)
            except asyncio.TimeoutError:
                writer.close()
                raise Timeout("timeout", f"no answer to the login within {self.connect_timeout:g} s") from None
            except BesterError as e:
                writer.close()
                if retry_with_next(e) and i + 1 < len(logins):
                    i += 1
                    continue
                raise
            except BaseException:
                writer.close()
                raise
            if outcome == "redirect":
                writer.close()
                target, token = value
                new = check_redirect(url, target, hops)
                hops += 1
                logins, i = [self.session.redirected(new, token)], 0
                continue
            self.session.logged_in(value)
            codec.compress = "compress" in self.session.features
            return _Conn(reader, writer, codec, url, rest)

    async def _login(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, codec: Codec, early: list, login: Login):
        writer.write(codec.encode(dumps(login.first())))
        bodies = list(early)
        while True:
            while bodies:
                outcome, value = login.step(loads(codec.open(bodies.pop(0))))
                if outcome == "send":
                    writer.write(codec.encode(dumps(value)))
                    continue
                return outcome, value, bodies
            data = await reader.read(65536)
            if not data:
                raise ConnectionLost("connection_lost", "the server closed the connection during the login")
            bodies += codec.feed(data)
            out = codec.take_output()
            if out:
                writer.write(out)
            if codec.closed and not bodies:
                raise ConnectionLost("connection_lost", f"the server closed the WebSocket during the login ({codec.close_reason})")

    def _install(self, conn: _Conn) -> None:
        if self._closed:  # closed while this connection was being made
            conn.writer.close()
            return
        old = self._conn
        self._conn = conn
        self.connections += 1
        self._changed.set()
        if old is not None:
            old.retiring = True
            if not old.pending:
                old.kill()
        conn.task = asyncio.ensure_future(self._read(conn))
        if self._seen.owed:
            self._schedule_acks()  # owed when the last connection went

    # -- reading ------------------------------------------------------------------------------

    async def _read(self, conn: _Conn) -> None:
        error: Optional[BaseException] = None
        try:
            for body in conn.early:
                self._on_frame(conn, loads(conn.codec.open(body)))
            while not conn.dead:
                data = await conn.reader.read(262144)
                if not data:
                    break
                bodies = conn.codec.feed(data)
                out = conn.codec.take_output()
                if out:
                    conn.write(out)
                for body in bodies:
                    self._on_frame(conn, loads(conn.codec.open(body)))
                if conn.codec.closed:
                    break
        except (OSError, BesterError) as e:
            error = e
        except Exception as e:
            log.exception("reader failed")
            error = e
        self._lost(conn, error)

    def _on_frame(self, conn: _Conn, frame: Any) -> None:
        what, value = route(frame)
        if what == "push":
            self._push(value)
            return
        if what == "closing":
            conn.closing_error = value
        call = conn.pending.pop(value, None) if what == "answer" else None
        if call is None:
            if what == "answer":
                log.debug("ignoring a frame that answers nothing in flight: %.200r", frame)
            if conn.retiring and not conn.pending:
                conn.kill()
            return
        how, result = answer(frame)
        if how == "redirect":
            conn.redirected = True
            self._redirects.append((call, frame))
            self._changed.set()
        elif how == "error":
            _settle(call.future, error=result)
        else:
            _settle(call.future, result)
        if conn.retiring and not conn.pending:
            conn.kill()

    def _push(self, push: Push) -> None:
        if self._seen.arrived(push.msg) != DELIVER:
            if self._seen.owed:
                self._schedule_acks()  # a copy of one acknowledged before: again
            return
        if self.on_push is not None:
            try:
                result = self.on_push(push)
                if asyncio.iscoroutine(result):
                    task = asyncio.ensure_future(result)
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                    task.add_done_callback(lambda t: self._handled(push.msg, not t.cancelled() and t.exception() is None))
                    return
            except Exception:
                log.exception("on_push failed")
                self._handled(push.msg, False)
                return
            self._handled(push.msg, True)
            return
        if len(self._pushes) >= self.max_pushes:
            dropped = self._pushes.popleft()
            self._seen.forget(dropped.msg)  # never taken, not acknowledged: it comes again
            log.warning("more than %d pushes not taken: dropping the oldest", self.max_pushes)
        self._pushes.append(push)
        self._push_event.set()

    def _handled(self, msg: Optional[str], ok: bool) -> None:
        """``on_push`` is done with a push: acknowledged, or (it failed) forgotten to come again."""
        if not ok:
            self._seen.forget(msg)
        elif msg is not None and self.auto_ack:
            self._owe(msg)

    def _owe(self, msg: str) -> None:
        self._seen.owe(msg)
        self._schedule_acks()

    def _schedule_acks(self) -> None:
        """One ``bester.ack`` per turn of the event loop for the pushes taken in it."""
        if not self._ack_scheduled:
            self._ack_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_acks)

    def _flush_acks(self) -> None:
        """Send the acks owed on the current connection (without one, on the next). The reply is
        taken here: a refusal is logged; a lost connection brings the pushes again."""
        self._ack_scheduled = False
        conn = self._conn
        while conn is not None and not conn.dead and self._seen.owed:
            msgs = self._seen.take()
            id_ = str(next(self._ids))
            call = _Call(asyncio.get_running_loop().create_future(), message(id_, "bester.ack", {"msgs": msgs}))
            call.future.add_done_callback(_ack_answered)
            conn.pending[id_] = call
            conn.write(conn.codec.encode(dumps(call.frame)))

    def _lost(self, conn: _Conn, error: Optional[BaseException]) -> None:
        conn.dead = True
        pending, conn.pending = conn.pending, {}
        current = self._conn is conn
        if current:
            self._conn = None
        reason = conn.closing_error
        if current and not self._closed:
            gave_up, again = after_loss(reason, conn.redirected, conn.url, self.reconnect)
            self._error = gave_up or self._error
            self._need_reconnect = again or self._need_reconnect
            log.info("connection to %s lost%s", conn.url, f": {reason or error}" if reason or error else "")
        self._changed.set()
        conn.writer.close()
        if pending:
            answer_of = in_flight_error(reason, error, conn.url, self._closed)
            for call in pending.values():
                _settle(call.future, error=answer_of())

    # -- the manager --------------------------------------------------------------------------

    async def _manage(self) -> None:
        delay = self.backoff
        retry_at = 0.0
        while not self._closed:
            now = time.monotonic()
            wake = [now + 1.0]
            conn = self._conn
            if self._need_reconnect:
                wake.append(retry_at)
            if conn and self.keepalive:
                wake.append(conn.last_send + self.keepalive)
                if conn.ping is not None:
                    wake.append(conn.ping_deadline)
            if not self._redirects:
                await self._wait_changed(max(0.0, min(wake) - now))
            if self._closed:
                return
            redirects, self._redirects = self._redirects, []
            for call, frame in redirects:
                await self._follow(call, frame)
            now = time.monotonic()
            if self._need_reconnect and now >= retry_at:
                try:
                    conn = await self._establish(self.session.logins())
                except BesterError as e:
                    if e.code in FATAL_LOGIN or e.code in ("too_many_redirects", "redirect_refused"):
                        log.error("cannot log in again: %s", e)
                        self._error = e
                        self._need_reconnect = False
                        self._changed.set()
                        return
                    log.info("reconnect failed: %s", e)
                    retry_at, delay = self._later(delay)
                    continue
                except (OSError, ValueError, asyncio.TimeoutError) as e:
                    log.info("reconnect failed: %s", e)
                    retry_at, delay = self._later(delay)
                    continue
                except Exception:  # a bug must not leave the client waiting for ever
                    log.exception("reconnect failed")
                    retry_at, delay = self._later(delay)
                    continue
                self._need_reconnect = False
                self._install(conn)
                delay = self.backoff
                log.info("reconnected to %s", conn.url)
                continue
            conn = self._conn
            if conn is None:
                continue
            await self._keep_alive(conn, now)
            await self._renew()

    def _later(self, delay: float):
        return time.monotonic() + delay * (0.5 + random.random() / 2), min(delay * 2, self.max_backoff)

    async def _keep_alive(self, conn: _Conn, now: float) -> None:
        if not self.keepalive:
            return
        if conn.ping is not None:
            if conn.ping.done():
                conn.ping.exception() if not conn.ping.cancelled() else None
                conn.ping = None
            elif now >= conn.ping_deadline:
                log.warning("no answer to bester.ping within %g s: reconnecting", min(self.timeout, self.keepalive))
                conn.kill()
                return
        if conn.ping is None and now - conn.last_send >= self.keepalive:
            conn.ping = await self.send("bester.ping", None, 0.01)
            conn.ping.add_done_callback(lambda f: f.cancelled() or f.exception())
            conn.ping_deadline = now + min(self.timeout, self.keepalive)

    async def _renew(self) -> None:
        at = self.session.renew_at()
        if at is None or self._renewing or time.time() < at:
            return
        self._renewing = True

        def done(future: asyncio.Future) -> None:
            self._renewing = False
            if not future.cancelled() and future.exception() is None:
                self.session.renewed(future.result().get("data") or {})

        (await self.send("bester.token", None, 1.0)).add_done_callback(done)

    async def _follow(self, call: _Call, frame: Dict[str, Any]) -> None:
        try:
            target, token = redirect_target(frame)
            url = check_redirect(self.session.url, target, call.hops)
            call.hops += 1
            conn = await self._establish([self.session.redirected(url, token)])
        except (BesterError, OSError, asyncio.TimeoutError) as e:
            err = e if isinstance(e, BesterError) else ConnectionLost("connection_lost", f"redirect failed: {e}")
            _settle(call.future, error=err)
            # The session was handed to that server; without it there is nothing to go back to.
            self._error = err
            self._need_reconnect = False
            self._changed.set()
            return
        self._install(conn)
        await self._dispatch_call(call, time.monotonic() + self.timeout)


def _ack_answered(future: "asyncio.Future[Dict[str, Any]]") -> None:
    """The reply of an automatic ``bester.ack``: a refusal is logged (a lost connection is not:
    the pushes come again and are acknowledged again)."""
    if future.cancelled():
        return
    error = future.exception()
    if isinstance(error, (ConnectionLost, Closed)):
        log.debug("bester.ack not answered: %s", error)
    elif error is not None:
        log.warning("bester.ack refused: %s", error)


async def connect(url: str, **options: Any) -> AsyncClient:
    """Connect to ``url`` and log in; the options are those of :class:`bester.Client`."""
    return await AsyncClient(url, **options).connect()
