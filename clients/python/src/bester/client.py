"""The blocking client: one connection (plus its reconnections) to a besterd server.

Threads: one reader per connection (it resolves the futures of replies by id and hands pushes
out) and one manager per client (reconnects with backoff, sends ``bester.ping`` when the line is
quiet, renews the resume token, follows redirects). Any number of threads may call
:meth:`Client.request` at once; requests are pipelined, each correlated by its own id.
"""

from __future__ import annotations

import collections
import itertools
import logging
import random
import socket
import ssl
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Tuple, Union

from .acks import DELIVER, MAX_ACK, MAX_SEEN, Seen, ack_ids
from .errors import FATAL_LOGIN, FINAL, BesterError, Closed, ConnectionLost, Timeout, error_for, from_frame
from .session import Credentials, Login, Session, check_redirect, load_key, redirect_target, retry_with_next
from .transport import client_certificate, open_socket
from .wire import MAX_FRAME, Codec, Url, WsCodec, carries_secret, dumps, loads

log = logging.getLogger("bester.client")


@dataclass
class Push:
    """A message pushed to this user: ``type``, ``data``, ``sender`` (the header's ``from``:
    ``{"user","server"}`` or ``{"server","handler"}``) and the whole ``frame``. A push of a
    storing type has its durable id in ``msg`` (else None); ``stored`` says it was kept while
    the user was away."""

    type: str
    data: Any
    sender: Dict[str, Any]
    frame: Dict[str, Any]
    msg: Optional[str] = None
    stored: bool = False

    @classmethod
    def of(cls, frame: Dict[str, Any]) -> "Push":
        header = frame.get("header") or {}
        msg = header.get("msg")
        return cls(
            header.get("type", ""), frame.get("data"), header.get("from") or {}, frame,
            msg if isinstance(msg, str) else None, header.get("stored") is True,
        )


def message(id_: str, type_: str, data: Any) -> Dict[str, Any]:
    return {"header": {"scope": "client", "id": id_}, "payload": {"type": type_, "data": data}}


def open_session(
    url: str,
    *,
    username: Optional[str],
    password: Optional[str],
    token: Optional[str],
    key: Any,
    server_name: Optional[str],
    ca: Optional[str],
    ssl_context: Optional[ssl.SSLContext],
    cert: Optional[Union[str, Tuple[str, str]]],
    authentication: Optional[Dict[str, Any]],
) -> Tuple[Session, Optional[ssl.SSLContext]]:
    """The session both clients start from, and the TLS context to use: credentials taken from
    the options, else from the URL; fails now on missing credentials or a ``cert=`` without TLS."""
    home = Url.parse(url)
    creds = Credentials(
        username=username if username is not None else home.username,
        password=password if password is not None else (home.password if token is None and key is None else None),
        token=token,
        key=load_key(key) if key is not None else None,
        server_name=server_name,
        cert=cert is not None,
        custom=authentication,
    )
    if cert is not None:
        if not home.tls:
            raise ValueError("cert= is for bester+tls:// and bester+wss:// URLs")
        ssl_context = client_certificate(ca, ssl_context, cert)
    creds.authentication()
    return Session(home, creds), ssl_context


def route(frame: Any) -> Tuple[str, Any]:
    """What a frame from the server is, for both readers: ``("push", Push)``; ``("closing",
    error)``, the server's reason before it closes (an error reply without an id); ``("answer",
    id)`` for a frame that may answer the request ``id`` in flight; or ``("junk", None)``."""
    header = frame.get("header") if isinstance(frame, dict) else None
    if not isinstance(header, dict):
        log.warning("ignoring a frame that is not a besterd frame: %.200r", frame)
        return "junk", None
    kind = header.get("kind")
    id_ = header.get("id")
    if kind == "push":
        return "push", Push.of(frame)
    if isinstance(id_, str):
        return "answer", id_
    if kind == "reply" and header.get("status") == "error" and id_ is None:
        error = from_frame(frame)
        log.info("the server says: %s", error)
        return "closing", error
    log.debug("ignoring a frame that answers nothing in flight: %.200r", frame)
    return "junk", None


def answer(frame: Dict[str, Any]) -> Tuple[str, Any]:
    """How a frame settles the request it answers: ``("redirect", frame)``, ``("error",
    BesterError)`` or ``("ok", frame)``."""
    header = frame["header"]
    if header.get("kind") == "redirect":
        return "redirect", frame
    if header.get("status") == "error":
        return "error", from_frame(frame)
    return "ok", frame


def after_loss(reason: Optional[BesterError], redirected: bool, url: str, reconnect: bool) -> Tuple[Optional[BesterError], bool]:
    """What losing the current connection means: the error the client gives up with (or None)
    and whether to reconnect."""
    if reason is not None and (reason.code in FINAL or not reconnect):
        return reason, False
    if redirected:
        return None, False  # the manager is logging in where the redirect said
    if not reconnect:
        return ConnectionLost("connection_lost", f"the connection to {url} was lost"), False
    return None, True


def in_flight_error(reason: Optional[BesterError], error: Optional[BaseException], url: str, closed: bool) -> Callable[[], BesterError]:
    """The answer of each request in flight on a lost connection: the server's reason when it
    gave one (a fresh exception each), else ``connection_lost`` or, after close(), ``closed``."""
    if closed:
        exc: BesterError = Closed("closed", "the client was closed with the request in flight")
        return lambda: exc
    if reason is not None:
        return lambda: error_for(reason.code, reason.text, reason.frame)
    why = f" ({error})" if error else ""
    lost = ConnectionLost("connection_lost", f"the connection to {url} was lost with the request in flight{why}")
    return lambda: lost


class _Call:
    __slots__ = ("future", "frame", "hops")

    def __init__(self, future: Future, frame: Dict[str, Any]):
        self.future = future
        self.frame = frame
        self.hops = 0


class _Conn:
    def __init__(self, sock: socket.socket, codec: Codec, url: Url):
        self.sock = sock
        self.codec = codec
        self.url = url
        self.wlock = threading.Lock()
        self.pending: Dict[str, _Call] = {}
        self.dead = False
        self.retiring = False
        self.redirected = False  # the server redirected the client: it closes this connection  # redirected away: close once its answers are in
        self.closing_error: Optional[BesterError] = None
        self.last_send = time.monotonic()
        self.ping: Optional[Future] = None
        self.ping_deadline = 0.0

    def write(self, data: bytes) -> None:
        with self.wlock:
            self.sock.sendall(data)
            self.last_send = time.monotonic()

    def kill(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Client:
    """A logged-in connection. Make one with :func:`bester.connect`."""

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
        on_push: Optional[Callable[[Push], None]] = None,
        max_pushes: int = 10000,
        max_frame: int = MAX_FRAME,
        max_request: int = 1 << 20,
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
        self.auto_ack = auto_ack
        self._seen = Seen(max_seen)  # stored pushes' ids handed over, across reconnections
        self._ca = ca
        self._ssl = ssl_context
        self._max_frame = max_frame
        self.max_request = max_request
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._conn: Optional[_Conn] = None
        self._closed = False
        self._error: Optional[BesterError] = None  # why the client gave up for good
        self._need_reconnect = False
        self._redirects: List[tuple] = []
        self._renewing = False
        self._pushes: Deque[Push] = collections.deque()
        self._manager: Optional[threading.Thread] = None
        #: How many times the client has connected and logged in (1 after connect()).
        self.connections = 0

    # -- public API ---------------------------------------------------------------------------

    def connect(self) -> "Client":
        """Connect and log in (raising the typed refusal); then keep the session up."""
        conn = self._establish(self.session.logins())
        self._install(conn)
        self._manager = threading.Thread(target=self._manage, name="bester-manager", daemon=True)
        self._manager.start()
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

    def send(self, type_: str, data: Any = None, timeout: Optional[float] = None) -> "Future[Dict[str, Any]]":
        """Send a message without waiting: a future of the whole reply frame (or the typed
        error). Waits (up to ``timeout``) while the client is reconnecting."""
        id_ = str(next(self._ids))
        call = _Call(Future(), message(id_, type_, data))
        self._dispatch_call(call, time.monotonic() + (self.timeout if timeout is None else timeout))
        return call.future

    def request_frame(self, type_: str, data: Any = None, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Send and wait for the reply frame (``header.delivered``, ``header.servers``, ...)."""
        timeout = self.timeout if timeout is None else timeout
        future = self.send(type_, data, timeout)
        try:
            return future.result(timeout)
        except FutureTimeout:
            self._forget(future)
            raise Timeout("timeout", f"no answer to {type_!r} within {timeout:g} s") from None

    def request(self, type_: str, data: Any = None, timeout: Optional[float] = None) -> Any:
        """Send a message of ``type_`` and return the reply's data; an error answer raises its
        typed :class:`~bester.BesterError`."""
        return self.request_frame(type_, data, timeout).get("data")

    def ping(self, timeout: Optional[float] = None) -> None:
        self.request("bester.ping", None, timeout)

    def whoami(self) -> Dict[str, Any]:
        return self.request("bester.whoami")

    def refresh(self, token: str) -> Dict[str, Any]:
        """``bester.refresh``: a token session now ends at the new JWT's ``exp`` (and has its
        ``info``); the new token is also what logging in again at this URL uses."""
        data = self.request("bester.refresh", {"token": token})
        self.session.refreshed(token, data)
        return data

    def pushes(self, timeout: Optional[float] = None) -> Iterator[Push]:
        """Pushes as they come (those that arrived before are kept, up to ``max_pushes``). Ends
        when the client is closed, or after ``timeout`` seconds without one."""
        while True:
            push = self.next_push(timeout)
            if push is None:
                return
            yield push

    def next_push(self, timeout: Optional[float] = None) -> Optional[Push]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._pushes:
                if self._closed:
                    return None
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)
            push = self._pushes.popleft()
            flush = False
            if push.msg is not None and self.auto_ack:
                self._seen.owe(push.msg)
                # One bester.ack for what had come: now, or from the manager shortly.
                flush = not self._pushes or len(self._seen.owed) >= ACK_BATCH
        if flush:
            self._flush_acks()
        return push

    def ack(self, *msgs: Union[Push, str], timeout: Optional[float] = None) -> int:
        """``bester.ack``: the server deletes these stored pushes (given as :class:`Push` or
        their ``msg`` ids); returns how many it deleted. For ``auto_ack=False``, once the work
        a push started is done; a copy that comes again before is not handed over twice."""
        ids = ack_ids(msgs)
        with self._lock:
            self._seen.acked(ids)
        acked = 0
        for at in range(0, len(ids), MAX_ACK):
            acked += (self.request("bester.ack", {"msgs": ids[at:at + MAX_ACK]}, timeout) or {}).get("acked", 0)
        return acked

    def logout(self) -> None:
        """``bester.logout`` (the session's resume tokens die with it), then close."""
        try:
            self.request("bester.logout")
        except (ConnectionLost, Closed):
            pass
        self.close()

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._error = self._error or Closed("closed", "the client was closed")
            conn = self._conn
            self._cond.notify_all()
        if conn:
            if isinstance(conn.codec, WsCodec):
                try:  # the WebSocket closing handshake, as far as the server takes part
                    conn.write(conn.codec.close_frame(1000))
                except OSError:
                    pass
            conn.kill()
            try:
                conn.sock.close()
            except OSError:
                pass
        if self._manager and self._manager is not threading.current_thread():
            self._manager.join(5)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- sending ------------------------------------------------------------------------------

    def _dispatch_call(self, call: _Call, deadline: float) -> None:
        id_ = call.frame["header"]["id"]
        data = None
        while True:
            with self._cond:
                while self._conn is None:
                    if self._closed or self._error:
                        err = self._error or Closed("closed", "the client is closed")
                        call.future.set_exception(error_for(err.code, err.text, err.frame))  # a fresh one each
                        return
                    left = deadline - time.monotonic()
                    if left <= 0:
                        call.future.set_exception(Timeout("timeout", "not connected: still reconnecting"))
                        return
                    self._cond.wait(left)
                conn = self._conn
                conn.pending[id_] = call
            if data is None:
                try:
                    body = dumps(call.frame)
                except (TypeError, ValueError) as e:
                    conn.pending.pop(id_, None)
                    call.future.set_exception(error_for("invalid_message", f"data is not JSON: {e}"))
                    return
                if len(body) > self.max_request:
                    conn.pending.pop(id_, None)
                    call.future.set_exception(too_large(len(body), self.max_request))
                    return
                data = conn.codec.encode(body, secret=carries_secret(call.frame))
            try:
                conn.write(data)
                return
            except OSError:
                # The connection is going away; its reader fails what it had. This call never
                # left, so it waits for the next connection.
                with self._cond:
                    if conn.pending.pop(id_, None) is None:
                        return  # already failed by the reader
                conn.kill()
                with self._cond:
                    if self._conn is conn:
                        self._cond.wait(0.05)

    def _forget(self, future: Future) -> None:
        with self._lock:
            conn = self._conn
            if conn:
                for id_, call in list(conn.pending.items()):
                    if call.future is future:
                        del conn.pending[id_]

    # -- connecting ---------------------------------------------------------------------------

    def _establish(self, logins: List[Login]) -> _Conn:
        """Connect and log in with the first of ``logins`` that works, following redirects."""
        if not logins:
            raise error_for("resume_expired", "no resume token left to log in again with, and no credentials for this server")
        hops = 0
        i = 0
        while True:
            login = logins[i]
            url = self.session.url
            sock, codec, early = open_socket(url, self.connect_timeout, self._ca, self._ssl, self._max_frame)
            try:
                outcome, value, rest = self._login(sock, codec, early, login)
            except BesterError as e:
                sock.close()
                if retry_with_next(e) and i + 1 < len(logins):
                    log.info("resume refused (%s); logging in with the credentials", e.code)
                    i += 1
                    continue
                raise
            except BaseException:
                sock.close()
                raise
            if outcome == "redirect":
                sock.close()
                target, token = value
                new = check_redirect(url, target, hops)
                hops += 1
                log.info("redirected from %s to %s", url, new)
                logins, i = [self.session.redirected(new, token)], 0
                continue
            self.session.logged_in(value)
            codec.compress = "compress" in self.session.features
            conn = _Conn(sock, codec, url)
            conn.early = rest  # type: ignore[attr-defined]
            return conn

    def _login(self, sock: socket.socket, codec: Codec, early: list, login: Login):
        deadline = time.monotonic() + self.connect_timeout
        sock.sendall(codec.encode(dumps(login.first())))
        bodies = list(early)
        while True:
            while bodies:
                frame = loads(codec.open(bodies.pop(0)))
                outcome, value = login.step(frame)
                if outcome == "send":
                    sock.sendall(codec.encode(dumps(value)))
                    continue
                return outcome, value, bodies
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout("timeout", f"no answer to the login within {self.connect_timeout:g} s")
            sock.settimeout(left)
            try:
                data = sock.recv(65536)
            except socket.timeout:
                continue
            finally:
                sock.settimeout(None)
            if not data:
                raise ConnectionLost("connection_lost", "the server closed the connection during the login")
            bodies += codec.feed(data)
            out = codec.take_output()
            if out:
                sock.sendall(out)
            if codec.closed and not bodies:
                raise ConnectionLost("connection_lost", f"the server closed the WebSocket during the login ({codec.close_reason})")

    def _install(self, conn: _Conn) -> None:
        with self._cond:
            if self._closed:  # closed while this connection was being made
                conn.sock.close()
                return
            old = self._conn
            self._conn = conn
            self.connections += 1
            self._cond.notify_all()
        if old is not None:
            old.retiring = True
            if not old.pending:
                old.kill()
        threading.Thread(target=self._read, args=(conn,), name="bester-reader", daemon=True).start()

    # -- reading ------------------------------------------------------------------------------

    def _read(self, conn: _Conn) -> None:
        error: Optional[BaseException] = None
        try:
            for body in conn.early:  # type: ignore[attr-defined]
                self._on_frame(conn, loads(conn.codec.open(body)))
            self._flush_acks(conn)
            while not conn.dead:
                data = conn.sock.recv(262144)
                if not data:
                    break
                bodies = conn.codec.feed(data)
                out = conn.codec.take_output()
                if out:
                    conn.write(out)
                for body in bodies:
                    self._on_frame(conn, loads(conn.codec.open(body)))
                self._flush_acks(conn)  # one bester.ack for the pushes of this read
                if conn.codec.closed:
                    break
        except (OSError, BesterError) as e:
            error = e
        except Exception as e:  # a bug in a push callback must not hang every request
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
        with self._lock:
            call = conn.pending.pop(value, None) if what == "answer" else None
            drained = conn.retiring and not conn.pending
        if call is None:
            if what == "answer":
                log.debug("ignoring a frame that answers nothing in flight: %.200r", frame)
            if drained:
                conn.kill()
            return
        how, result = answer(frame)
        if how == "redirect":
            with self._cond:
                conn.redirected = True
                self._redirects.append((call, frame))
                self._cond.notify_all()
        elif how == "error":
            call.future.set_exception(result)
        else:
            call.future.set_result(result)
        if drained:
            conn.kill()

    def _push(self, push: Push) -> None:
        with self._lock:
            if self._seen.arrived(push.msg) != DELIVER:
                return  # handed over before: acknowledged again if it was, else dropped
        if self.on_push is not None:
            try:
                self.on_push(push)
            except Exception:
                log.exception("on_push failed")
                with self._lock:
                    self._seen.forget(push.msg)  # not acknowledged: it comes again
                return
            if self.auto_ack:
                with self._lock:
                    self._seen.owe(push.msg)
            return
        with self._cond:
            if len(self._pushes) >= self.max_pushes:
                dropped = self._pushes.popleft()
                self._seen.forget(dropped.msg)  # never taken, not acknowledged: it comes again
                log.warning("more than %d pushes not taken: dropping the oldest", self.max_pushes)
            self._pushes.append(push)
            self._cond.notify_all()

    def _flush_acks(self, conn: Optional[_Conn] = None) -> None:
        """Send the acks owed in one ``bester.ack`` (per 4096 ids) on ``conn`` or the current
        connection; without one they wait for the next. Its reply is taken here: an error is
        logged, and a lost connection brings the pushes again, to be acknowledged again."""
        while True:
            with self._lock:
                conn = conn or self._conn
                if conn is None or conn.dead or not self._seen.owed:
                    return
                msgs = self._seen.take()
                id_ = str(next(self._ids))
                call = _Call(Future(), message(id_, "bester.ack", {"msgs": msgs}))
                conn.pending[id_] = call
            call.future.add_done_callback(_ack_answered)
            try:
                conn.write(conn.codec.encode(dumps(call.frame)))
            except OSError as e:
                with self._lock:
                    conn.pending.pop(id_, None)
                call.future.set_exception(ConnectionLost("connection_lost", f"bester.ack not sent: {e}"))
                return

    def _lost(self, conn: _Conn, error: Optional[BaseException]) -> None:
        with self._cond:
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
            self._cond.notify_all()
        try:
            conn.sock.close()
        except OSError:
            pass
        if pending:
            answer_of = in_flight_error(reason, error, conn.url, self._closed)
            for call in pending.values():
                if not call.future.done():
                    call.future.set_exception(answer_of())
        if current and not self._closed:
            log.info("connection to %s lost%s", conn.url, f": {reason or error}" if reason or error else "")

    # -- the manager: reconnect, keep-alive, resume renewal, redirects ------------------------

    def _manage(self) -> None:
        delay = self.backoff
        retry_at = 0.0
        while True:
            with self._cond:
                if self._closed:
                    return
                now = time.monotonic()
                wake = [now + (0.05 if self._seen.owed else 1.0)]
                conn = self._conn
                if self._need_reconnect:
                    wake.append(retry_at)
                if conn and self.keepalive:
                    wake.append(conn.last_send + self.keepalive)
                    if conn.ping is not None:
                        wake.append(conn.ping_deadline)
                if not self._redirects:
                    self._cond.wait(max(0.0, min(wake) - now))
                if self._closed:
                    return
                redirects, self._redirects = self._redirects, []
                need = self._need_reconnect
                conn = self._conn
            now = time.monotonic()
            for call, frame in redirects:
                self._follow(call, frame)
            if need and now >= retry_at:
                try:
                    conn = self._establish(self.session.logins())
                except BesterError as e:
                    if e.code in FATAL_LOGIN or e.code in ("too_many_redirects", "redirect_refused"):
                        log.error("cannot log in again: %s", e)
                        self._give_up(e)
                        return
                    log.info("reconnect failed: %s", e)
                    retry_at, delay = self._later(delay)
                    continue
                except (OSError, ValueError) as e:
                    log.info("reconnect failed: %s", e)
                    retry_at, delay = self._later(delay)
                    continue
                except Exception:  # a bug must not leave the client waiting for ever
                    log.exception("reconnect failed")
                    retry_at, delay = self._later(delay)
                    continue
                with self._cond:
                    self._need_reconnect = False
                self._install(conn)
                delay = self.backoff
                log.info("reconnected to %s", conn.url)
                continue
            if conn is None:
                continue
            self._flush_acks(conn)  # those the iterator left owed, or owed since a reconnect
            self._keep_alive(conn, now)
            self._renew(conn)

    def _later(self, delay: float):
        wait = delay * (0.5 + random.random() / 2)
        return time.monotonic() + wait, min(delay * 2, self.max_backoff)

    def _give_up(self, error: BesterError) -> None:
        with self._cond:
            self._error = error
            self._need_reconnect = False
            self._cond.notify_all()

    def _keep_alive(self, conn: _Conn, now: float) -> None:
        if not self.keepalive:
            return
        if conn.ping is not None:
            if conn.ping.done():
                conn.ping = None
            elif now >= conn.ping_deadline:
                log.warning("no answer to bester.ping within %g s: reconnecting", min(self.timeout, self.keepalive))
                conn.kill()
                return
        if conn.ping is None and now - conn.last_send >= self.keepalive:
            conn.ping = self.send("bester.ping", None, 0.01)
            conn.ping_deadline = now + min(self.timeout, self.keepalive)

    def _renew(self, conn: _Conn) -> None:
        at = self.session.renew_at()
        if at is None or self._renewing or time.time() < at:
            return
        self._renewing = True

        def done(future: Future) -> None:
            self._renewing = False
            if future.exception() is None:
                self.session.renewed(future.result().get("data") or {})
                log.debug("resume token renewed")

        self.send("bester.token", None, 1.0).add_done_callback(done)

    def _follow(self, call: _Call, frame: Dict[str, Any]) -> None:
        """A request was answered with a redirect: log in at the URL with its token and send the
        request there. The old connection closes once its other answers are in."""
        try:
            target, token = redirect_target(frame)
            url = check_redirect(self.session.url, target, call.hops)
            call.hops += 1
            conn = self._establish([self.session.redirected(url, token)])
        except (BesterError, OSError) as e:
            err = e if isinstance(e, BesterError) else ConnectionLost("connection_lost", f"redirect failed: {e}")
            call.future.set_exception(err)
            # The session was handed to that server; without it there is nothing to go back to.
            self._give_up(err)
            return
        self._install(conn)
        self._dispatch_call(call, time.monotonic() + self.timeout)


#: The iterator sends the acks owed once this many are (or once it has taken all that came).
ACK_BATCH = 256


def _ack_answered(future: "Future[Dict[str, Any]]") -> None:
    """The reply of an automatic ``bester.ack``: a refusal is logged (a lost connection is not:
    the pushes come again and are acknowledged again)."""
    error = future.exception()
    if isinstance(error, (ConnectionLost, Closed)):
        log.debug("bester.ack not answered: %s", error)
    elif error is not None:
        log.warning("bester.ack refused: %s", error)


def too_large(size: int, limit: int) -> BesterError:
    """A message the server would refuse by closing the connection is refused here instead."""
    return error_for(
        "frame_too_large",
        f"the message is {size} bytes, over the limit of {limit} bytes (the server's max_frame_bytes; max_request= to change it)",
    )


def connect(url: str, **options: Any) -> Client:
    """Connect to ``url`` and log in; see :class:`Client` for the options."""
    return Client(url, **options).connect()
