"""Handlers: a function per request type, served concurrently over the broker's handler socket.

::

    import bester

    handler = bester.Handler()

    @handler.on("echo")
    def echo(request):
        return request.data            # a plain value is the reply's data

    handler.run()                      # connects to $BESTER_SOCKET; exits 0 when besterd closes it

A function gets a :class:`Request` and returns a value (the reply's data), an :class:`Answer`
(``request.reply(...)``, ``request.error(code, text)``, ``request.send_clients(users, data)``,
``request.send_servers(servers, data)``, ``request.send_handler(type, data)``), or raises
:class:`~bester.BesterError` (an error answer with its code and text); any other exception is
answered ``internal_error`` and logged. ``async def`` functions run on an event loop of their own.
Requests run on a pool of ``workers`` threads (``workers=0``: one at a time on the reading thread),
so a slow request does not hold up the others.

``handler.push(users, type, data)`` sends a message that answers no request; the broker's report
comes back as the future's :class:`Report`. ``@handler.login`` serves ``kind:"login"`` requests
(an authentication handler). ``Handler(listen=True)`` is for ``connect = "/path"`` in besterd's
configuration: the handler listens on ``$BESTER_SOCKET`` and besterd dials it for each request.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import os
import queue
import signal
import socket
import stat
import sys
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from .errors import BesterError
from .wire import _LEN, Codec, dumps, loads

log = logging.getLogger("bester.handler")


@dataclass
class Answer:
    """A frame for the broker (the ``request`` token is filled in when it is sent). A function may
    return a list of them: its answer and, after or before it, pushes (:func:`push`,
    :func:`push_servers`), sent in the order of the list."""

    frame: Dict[str, Any]
    push: bool = False


def push(users: Iterable[str], type_: str, data: Any = None) -> Answer:
    """A message to these users that answers no request, to return beside the answer
    (``return [request.reply(...), bester.push(...)]``); its report is only logged. To wait for
    the report, use :meth:`Handler.push`."""
    return Answer({"header": {"status": "ok", "command": "sendClients", "commandData": list(users)}, "payload": {"type": type_, "data": data}}, push=True)


def push_servers(servers: Iterable[str], type_: str, data: Any = None) -> Answer:
    """A message to these peer servers that answers no request, to return beside the answer."""
    return Answer({"header": {"status": "ok", "command": "sendServers", "commandData": list(servers)}, "payload": {"type": type_, "data": data}}, push=True)


def _answer(command: str, command_data: Any, type_: str, data: Any, status: str = "ok") -> Answer:
    header: Dict[str, Any] = {"status": status, "command": command}
    if command_data is not None:
        header["commandData"] = command_data
    return Answer({"header": header, "payload": {"type": type_, "data": data}})


class Request:
    """A request from the broker: ``type``, ``data``, ``user``, ``server``, ``info`` (a token
    session's ``info`` claim), ``scope`` (``"client"`` or ``"server"``), ``via``, ``raw``."""

    __slots__ = ("raw", "token", "type", "data", "scope", "sender", "via")

    def __init__(self, raw: Dict[str, Any]):
        header = raw.get("header") or {}
        payload = raw.get("payload") or {}
        self.raw = raw
        self.token: Optional[str] = header.get("request")
        self.type: str = payload.get("type", "")
        self.data: Any = payload.get("data")
        self.scope: str = header.get("scope", "client")
        self.sender: Dict[str, Any] = header.get("from") or {}
        self.via: List[str] = header.get("via") or []

    @property
    def user(self) -> Optional[str]:
        return self.sender.get("user")

    @property
    def server(self) -> Optional[str]:
        return self.sender.get("server")

    @property
    def info(self) -> Optional[Dict[str, Any]]:
        return self.sender.get("info")

    def reply(self, data: Any = None, type_: Optional[str] = None) -> Answer:
        """Answer the sender only."""
        return _answer("reply", None, type_ or self.type, data)

    def error(self, code: str, text: str) -> Answer:
        """An error answer: ``code`` stable snake_case, ``text`` for people."""
        return _answer("reply", None, self.type, {"error": text, "code": code}, status="error")

    def send_clients(self, users: Iterable[str], data: Any = None, type_: Optional[str] = None) -> Answer:
        """Deliver the payload to these users (the sender is told who got it)."""
        return _answer("sendClients", list(users), type_ or self.type, data)

    def send_servers(self, servers: Iterable[str], data: Any = None, type_: Optional[str] = None) -> Answer:
        """Deliver the payload to these peer servers."""
        return _answer("sendServers", list(servers), type_ or self.type, data)

    def send_handler(self, type_: str, data: Any = None) -> Answer:
        """Pass the payload on to the handler of ``type_``; its answer is routed in turn."""
        return _answer("sendHandler", type_, type_, data)

    def redirect(self, url: str, token: Optional[str] = "mint") -> Answer:
        """Send the client to another server (a greeter placing users): it logs in at ``url``
        with ``token`` — ``"mint"`` (the default): a resume token of its session, which a server
        sharing the token key and the user store accepts; or a token of the application's own."""
        data: Dict[str, Any] = {"url": url}
        if token is not None:
            data["token"] = token
        return Answer({"header": {"status": "ok", "command": "redirect", "commandData": data}})

    def __repr__(self) -> str:
        return f"Request(type={self.type!r}, request={self.token!r}, user={self.user!r})"


class LoginRequest:
    """A login for an authentication handler: ``authentication`` (what the client sent, e.g.
    ``{"apiKey": …}``), ``address`` (``"ip:port"``), ``listener`` and ``transport``."""

    __slots__ = ("raw", "token", "authentication", "address", "listener", "transport")

    def __init__(self, raw: Dict[str, Any]):
        header = raw.get("header") or {}
        sender = header.get("from") or {}
        self.raw = raw
        self.token: Optional[str] = header.get("request")
        data = (raw.get("payload") or {}).get("data")
        self.authentication: Dict[str, Any] = data if isinstance(data, dict) else {}
        self.address: Optional[str] = sender.get("address")
        self.listener: Optional[str] = sender.get("listener")
        self.transport: Optional[str] = sender.get("transport")

    def __repr__(self) -> str:  # never shows the credentials
        return f"LoginRequest(request={self.token!r}, address={self.address!r}, fields={sorted(self.authentication)})"


@dataclass
class Report:
    """The broker's report on a push: ``status``, ``delivered``, ``offline``, ``servers``; for an
    error, ``code`` and ``text``."""

    status: str
    delivered: List[str] = field(default_factory=list)
    offline: List[str] = field(default_factory=list)
    servers: Dict[str, Any] = field(default_factory=dict)
    code: Optional[str] = None
    text: Optional[str] = None
    frame: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, frame: Dict[str, Any]) -> "Report":
        h = frame.get("header") or {}
        raw = frame.get("data")
        data: Dict[str, Any] = raw if isinstance(raw, dict) else {}
        return cls(h.get("status", ""), h.get("delivered") or [], h.get("offline") or [], h.get("servers") or {}, data.get("code"), data.get("error"), frame)


Function = Callable[[Request], Any]


class _Link:
    """One connection to the broker."""

    def __init__(self, sock: socket.socket, max_frame: int):
        self.sock = sock
        self.codec = Codec(max_frame)
        self.wlock = threading.Lock()

    def send(self, frames: List[Dict[str, Any]]) -> None:
        self.write(b"".join(self.codec.encode(dumps(f)) for f in frames))

    def write(self, data: bytes) -> None:
        with self.wlock:
            self.sock.sendall(data)


class Handler:
    """Serves request types for besterd. See the module documentation."""

    def __init__(self, path: Optional[str] = None, *, workers: int = 16, listen: bool = False, max_frame: int = 1 << 20):
        self.path = path
        self.workers = workers
        self.listen = listen
        self.max_frame = max_frame
        self._routes: Dict[str, Function] = {}
        self._fallback: Optional[Function] = None
        self._login: Optional[Callable[[LoginRequest], Any]] = None
        self._link: Optional[_Link] = None
        self._jobs: "queue.Queue[tuple]" = queue.Queue()
        self._pool: List[threading.Thread] = []
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._ids = itertools.count(1)
        self._reports: Dict[str, Future] = {}
        self._lock = threading.Lock()
        self._async: Dict[Any, bool] = {}

    # -- registration -------------------------------------------------------------------------

    def on(self, type_: Optional[str] = None) -> Callable[[Function], Function]:
        """Decorator: serve ``type_`` with the function (``None``: every type not registered)."""

        def register(fn: Function) -> Function:
            if type_ is None:
                self._fallback = fn
            else:
                self._routes[type_] = fn
            return fn

        return register

    def login(self, fn: Callable[[LoginRequest], Any]) -> Callable[[LoginRequest], Any]:
        """Decorator: serve logins. The function returns ``{"user": NAME, "info": {...}}`` (or
        just the user name) to accept, or raises ``BesterError("auth_failed", text)``."""
        self._login = fn
        return fn

    # -- pushes -------------------------------------------------------------------------------

    def push(self, users: Iterable[str], type_: str, data: Any = None) -> "Future[Report]":
        """Send ``data`` of ``type_`` to these users, answering no request; the future gets the
        broker's report (who got it)."""
        return self._push("sendClients", list(users), type_, data)

    def push_servers(self, servers: Iterable[str], type_: str, data: Any = None) -> "Future[Report]":
        """Send to these peer servers; the future gets the report with ``servers``."""
        return self._push("sendServers", list(servers), type_, data)

    def _push(self, command: str, targets: List[str], type_: str, data: Any) -> "Future[Report]":
        link = self._link
        if link is None:
            raise BesterError("closed", "the handler is not connected")
        id_ = f"p{next(self._ids)}"
        future: Future = Future()
        with self._lock:
            self._reports[id_] = future
        frame = {"header": {"status": "ok", "command": command, "commandData": targets, "id": id_}, "payload": {"type": type_, "data": data}}
        try:
            link.send([frame])
        except OSError as e:
            with self._lock:
                self._reports.pop(id_, None)
            raise BesterError("connection_lost", f"the broker went away: {e}") from None
        return future

    # -- serving ------------------------------------------------------------------------------

    def run(self) -> None:
        """Log to stderr, serve until besterd closes the socket, then exit with status 0 (1 if
        it cannot connect or gets a broken frame, 2 if ``BESTER_SOCKET`` is not set)."""
        setup_logging()
        sys.exit(self.serve())

    def serve(self) -> int:
        """Serve; returns the exit status :meth:`run` would exit with."""
        path = self.path or os.environ.get("BESTER_SOCKET")
        if not path:
            log.error("BESTER_SOCKET is not set: handlers are started by besterd")
            return 2
        if self.listen:
            return self._serve_listening(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError as e:
            log.error("cannot connect to %s: %s", path, e)
            return 1
        log.info("connected to %s", path)
        return self.serve_socket(sock)

    def serve_socket(self, sock: socket.socket) -> int:
        """Serve on a connected socket until EOF (0) or a broken frame (1)."""
        link = _Link(sock, self.max_frame)
        self._link = link
        self._start_pool()
        status = 0
        try:
            while True:
                try:
                    data = sock.recv(262144)
                except (ConnectionResetError, OSError):
                    data = b""
                if not data:
                    if link.codec.pending:
                        log.warning("the socket closed in the middle of a frame (%d bytes)", link.codec.pending)
                    log.info("besterd closed the socket; exiting")
                    break
                try:
                    bodies = link.codec.feed(data)
                except BesterError as e:
                    log.error("bad frame from besterd, closing: %s", e)
                    status = 1
                    break
                out: List[bytes] = []  # answers made on this thread go out in one write
                for body in bodies:
                    try:
                        frame = loads(body)
                    except BesterError as e:
                        log.error("bad frame from besterd, closing: %s", e)
                        return 1
                    self._on_frame(link, frame, out)
                if out:
                    try:
                        link.write(b"".join(out))
                    except OSError:
                        log.info("besterd went away while we were answering")
        finally:
            self._link = None
            with self._lock:
                reports, self._reports = self._reports, {}
            for future in reports.values():
                future.set_exception(BesterError("connection_lost", "the broker went away before reporting"))
            sock.close()
        return status

    def _serve_listening(self, path: str) -> int:
        """``connect`` mode: listen on ``path`` (created here, 0600; an existing file there is an
        error, never removed), one thread per connection besterd makes."""
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if not _remove_stale_socket(path):
            return 1
        old = os.umask(0o177)
        try:
            server.bind(path)
        except OSError as e:
            log.error("cannot listen on %s: %s", path, e)
            return 1
        finally:
            os.umask(old)
        server.listen(128)
        st = os.lstat(path)
        if not stat.S_ISSOCK(st.st_mode):
            return 1
        log.info("listening on %s", path)
        self.workers = 0  # each connection has its own thread already
        stop = threading.Event()

        def on_term(*_: Any) -> None:
            stop.set()
            try:
                server.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_term)
        try:
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except OSError:
                    break
                threading.Thread(target=self._serve_dialled, args=(conn,), daemon=True).start()
        finally:
            server.close()
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)
            except OSError:
                pass
        return 0

    def _serve_dialled(self, sock: socket.socket) -> None:
        link = _Link(sock, self.max_frame)
        try:
            while True:
                data = sock.recv(262144)
                if not data:
                    return
                out: List[bytes] = []
                for body in link.codec.feed(data):
                    self._on_frame(link, loads(body), out)
                if out:
                    link.write(b"".join(out))
        except (OSError, BesterError) as e:
            log.info("a connection from besterd ended: %s", e)
        finally:
            sock.close()

    def _start_pool(self) -> None:
        while len(self._pool) < self.workers:
            t = threading.Thread(target=self._work, name="bester-worker", daemon=True)
            t.start()
            self._pool.append(t)

    def _work(self) -> None:
        while True:
            link, frame, fn, arg = self._jobs.get()
            data = self._handle(frame, fn, arg)
            if data:
                try:
                    link.write(data)
                except OSError:
                    log.info("besterd went away while we were answering")

    def _on_frame(self, link: _Link, frame: Any, out: List[bytes]) -> None:
        header = frame.get("header") if isinstance(frame, dict) else None
        kind = header.get("kind") if isinstance(header, dict) else None
        if kind == "report":
            self._on_report(frame)
        elif kind in ("request", "login"):
            fn, arg = self._target(frame)
            if fn is not None and self._is_async(fn):
                asyncio.run_coroutine_threadsafe(self._handle_async(link, frame, fn, arg), self._event_loop())
            elif self.workers:
                self._jobs.put((link, frame, fn, arg))
            else:
                data = self._handle(frame, fn, arg)
                if data:
                    out.append(data)
        else:
            log.warning("ignoring a frame that is neither a request nor a report: %.200r", frame)

    def _on_report(self, frame: Dict[str, Any]) -> None:
        header = frame["header"]
        id_ = header.get("id")
        with self._lock:
            future = self._reports.pop(id_, None) if isinstance(id_, str) else None
        if future is not None:
            future.set_result(Report.of(frame))
        elif header.get("status") != "ok":
            log.warning("report: %s", dumps(frame).decode())
        else:
            log.debug("report: %s", dumps(frame).decode())

    def _target(self, frame: Dict[str, Any]) -> Tuple[Optional[Callable[[Any], Any]], Any]:
        """The function for a request or login, and what it is called with."""
        if frame["header"].get("kind") == "login":
            return self._login, LoginRequest(frame)
        request = Request(frame)
        return self._routes.get(request.type, self._fallback), request

    def _is_async(self, fn: Any) -> bool:
        is_async = self._async.get(fn)
        if is_async is None:
            is_async = self._async[fn] = inspect.iscoroutinefunction(fn)
        return is_async

    def _handle(self, frame: Dict[str, Any], fn: Optional[Callable[[Any], Any]], arg: Any) -> Optional[bytes]:
        """The encoded answer to one request (or login), calling its function on this thread."""
        result: Any = None
        error: Optional[BaseException] = None
        if fn is not None:
            try:
                result = fn(arg)
            except Exception as e:
                error = e
        return self._finish(frame, fn, arg, result, error)

    async def _handle_async(self, link: _Link, frame: Dict[str, Any], fn: Callable[[Any], Any], arg: Any) -> None:
        """An ``async def`` function's request, on the handler's event loop: any number at once."""
        result: Any = None
        error: Optional[BaseException] = None
        try:
            result = await fn(arg)
        except Exception as e:
            error = e
        data = self._finish(frame, fn, arg, result, error)
        if data:
            try:
                link.write(data)
            except OSError:
                log.info("besterd went away while we were answering")

    def _finish(self, frame: Dict[str, Any], fn: Any, arg: Any, result: Any, error: Optional[BaseException]) -> Optional[bytes]:
        token = frame["header"].get("request")
        # A list of Answers is the answer and its pushes, sent in the list's order.
        frames: List[Optional[Dict[str, Any]]] = [None]
        if isinstance(arg, LoginRequest):
            answer = self._answer_login(arg, fn, result, error)
        else:
            if error is None and isinstance(result, (list, tuple)) and result and all(isinstance(a, Answer) for a in result):
                answers = [a for a in result if not a.push]
                if len(answers) == 1:
                    frames = [None if not a.push else a.frame for a in result]
                    result = answers[0]
                else:
                    error = ValueError(f"a list of answers must hold exactly one answer besides pushes, not {len(answers)}")
            answer = self._answer(arg, fn, result, error)
        answer["header"]["request"] = token
        try:
            body = dumps(answer)
            if len(body) > self.max_frame:
                raise ValueError(f"the answer is {len(body)} bytes, over the frame limit")
        except (TypeError, ValueError) as e:
            log.error("request %s: cannot send the answer: %s", token, e)
            answer = {"header": {"status": "error", "command": "reply", "request": token}, "payload": {"type": answer.get("payload", {}).get("type", "bester.login"), "data": {"error": f"the handler's answer cannot be sent: {e}", "code": "internal_error"}}}
            body = dumps(answer)
            frames = [None]
        out = []
        for f in frames:
            if f is None:
                out.append(_LEN.pack(len(body)) + body)
                continue
            try:
                pushed = dumps(f)
            except (TypeError, ValueError) as e:
                log.error("request %s: cannot send a push: %s", token, e)
                continue
            out.append(_LEN.pack(len(pushed)) + pushed)
        return b"".join(out)

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="bester-asyncio", daemon=True).start()
                self._loop = loop
            return self._loop

    def _answer(self, request: Request, fn: Any, result: Any, error: Optional[BaseException]) -> Dict[str, Any]:
        if fn is None:
            error = BesterError("unknown_type", f"this handler does not serve {request.type!r}")
        if isinstance(error, BesterError):
            return request.error(error.code, error.text).frame
        if error is not None:
            log.error("request %s (%s) failed", request.token, request.type, exc_info=error)
            return request.error("internal_error", f"the {request.type} handler failed: {type(error).__name__}").frame
        if isinstance(result, Answer):
            return result.frame
        return {"header": {"status": "ok", "command": "reply"}, "payload": {"type": request.type, "data": result}}

    def _answer_login(self, login: LoginRequest, fn: Any, result: Any, error: Optional[BaseException]) -> Dict[str, Any]:
        def answer(status: str, data: Any) -> Dict[str, Any]:
            return {"header": {"status": status, "command": "reply"}, "payload": {"type": "bester.login", "data": data}}

        if fn is None:
            error = BesterError("auth_failed", "this handler does not serve logins")
        if isinstance(error, BesterError):
            return answer("error", {"error": error.text, "code": error.code})
        if error is not None:
            log.error("login %s failed", login.token, exc_info=error)
            return answer("error", {"error": f"the login handler failed: {type(error).__name__}", "code": "internal_error"})
        if isinstance(result, str):
            result = {"user": result}
        if not isinstance(result, dict) or not isinstance(result.get("user"), str):
            log.error("login %s: the login function must return a user name or {'user': ...}", login.token)
            return answer("error", {"error": "the login handler failed: no user", "code": "internal_error"})
        return answer("ok", result)


def _remove_stale_socket(path: str) -> bool:
    """Make room at ``path`` for our socket: nothing there, or a socket of our own user that no
    one listens on any more (left by a previous run that was killed) — removed. Anything else
    (a file, a link, another user's socket, a live one) is left alone and refused."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return True
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.geteuid():
        log.error("cannot listen on %s: something else is there (not a socket of ours)", path)
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
        log.info("removed a stale socket at %s", path)
        return True
    except OSError as e:
        log.error("cannot listen on %s: %s", path, e)
        return False
    finally:
        probe.close()
    log.error("cannot listen on %s: another process is listening there", path)
    return False


def setup_logging() -> None:
    """Log to stderr (never stdout) as ``<type>[<pid>] LEVEL message``; ``BESTER_LOG=debug``."""
    level = getattr(logging, os.environ.get("BESTER_LOG", "info").upper(), logging.INFO)
    name = os.environ.get("BESTER_TYPE", "handler")
    logging.basicConfig(stream=sys.stderr, level=level, format=f"{name}[%(process)d] %(levelname)s %(message)s")


AnyAnswer = Union[Answer, Any]
