"""What a client session knows, without I/O: credentials and the identify frame they make, the
login exchange (reply, ed25519 challenge, redirect), the resume token and when to renew it, and
which URL may receive which credentials. The blocking and the asyncio clients both use it.
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

from .errors import BesterError, error_for, from_frame
from .wire import Url

#: Redirects followed in a row before giving up (``too_many_redirects``).
MAX_REDIRECTS = 3

KeyLike = Union[bytes, str, "os.PathLike[str]", Any]


def load_key(key: KeyLike) -> Any:
    """An ed25519 private key for the ``cryptography`` package: a key object, 32 raw seed bytes, or
    the path of a PKCS#8 PEM file (as ``bester keygen`` writes). Python's standard library cannot
    sign ed25519, so key logins need ``cryptography`` installed."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("key logins need the 'cryptography' package (pip install cryptography)") from None
    if isinstance(key, Ed25519PrivateKey):
        return key
    if isinstance(key, (bytes, bytearray)) and len(key) == 32:
        return Ed25519PrivateKey.from_private_bytes(bytes(key))
    if isinstance(key, (str, os.PathLike)):
        with open(key, "rb") as f:
            loaded = serialization.load_pem_private_key(f.read(), password=None)
        if not isinstance(loaded, Ed25519PrivateKey):
            raise ValueError(f"{key}: not an ed25519 private key")
        return loaded
    raise TypeError("key: an Ed25519PrivateKey, 32 seed bytes, or the path of a PKCS#8 PEM file")


def public_key_b64(key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def signed_bytes(server: str, username: str, nonce: str) -> bytes:
    """What a key login signs (PROTOCOL.md §2): the parts joined by zero bytes."""
    return b"\0".join(part.encode("utf-8") for part in ("besterd-login-v1", server, username, nonce))


@dataclass
class Credentials:
    """How to log in at the URL the client was given (never sent anywhere else)."""

    username: Optional[str] = None
    password: Optional[str] = None
    token: Optional[str] = None
    key: Any = None
    server_name: Optional[str] = None
    cert: bool = False  # a client certificate is configured (TLS): identify may carry nothing
    custom: Optional[Dict[str, Any]] = field(default=None, repr=False)  # for an auth handler

    def __repr__(self) -> str:
        how = "password" if self.password is not None else "token" if self.token else "key" if self.key else "certificate" if self.cert else "authentication" if self.custom is not None else "none"
        return f"Credentials(username={self.username!r}, by={how})"

    @property
    def any(self) -> bool:
        return self.token is not None or self.password is not None or self.key is not None or self.cert or self.custom is not None

    def authentication(self) -> Optional[Dict[str, Any]]:
        """What identify carries (``None``: nothing, for a login by client certificate)."""
        if self.custom is not None:
            return dict(self.custom)
        if self.token is not None:
            return {"token": self.token}
        if self.key is not None:
            if not self.username:
                raise ValueError("a key login needs a username")
            return {"username": self.username, "publicKey": public_key_b64(self.key)}
        if self.password is not None:
            if not self.username:
                raise ValueError("a password login needs a username")
            return {"username": self.username, "password": self.password}
        if self.cert:
            return None
        raise ValueError("connect() needs password=, token=, key= or cert= (or a password in the URL)")


def identify(authentication: Optional[Dict[str, Any]], features: Optional[List[str]] = None) -> Dict[str, Any]:
    """The identify frame; ``features`` (PROTOCOL.md §2 "Features and limits") is sent only when
    there is one to offer, so a client that wants none sends what a spec-v3 client sends."""
    stanza: Dict[str, Any] = {"type": "client"}
    if authentication is not None:
        stanza["authentication"] = authentication
    if features:
        stanza["features"] = list(features)
    return {"header": {"identify": stanza}}


@dataclass
class Login:
    """One login exchange. Feed it the server's frames with :meth:`step`."""

    authentication: Optional[Dict[str, Any]] = field(repr=False)  # holds the password or token
    key: Any = field(default=None, repr=False)
    username: Optional[str] = None
    server_name: Optional[str] = None
    challenged: bool = False
    features: List[str] = field(default_factory=list)  # offered in identify

    def first(self) -> Dict[str, Any]:
        return identify(self.authentication, self.features)

    def step(self, frame: Dict[str, Any]) -> Tuple[str, Any]:
        """``("ok", data)``, ``("send", frame)`` (the signature for a challenge) or
        ``("redirect", (url, token))``; an error answer raises its typed error."""
        header = frame.get("header") if isinstance(frame, dict) else None
        if not isinstance(header, dict):
            raise error_for("protocol_error", f"not a besterd frame: {frame!r:.200}")
        kind = header.get("kind")
        if header.get("status") == "error":
            raise from_frame(frame)
        if kind == "redirect":
            return "redirect", redirect_target(frame)
        if kind == "challenge":
            if self.key is None or self.challenged:
                raise error_for("protocol_error", "the server sent a challenge this login did not ask for")
            self.challenged = True
            data = frame.get("data") or {}
            server, nonce = data.get("server"), data.get("nonce")
            if not isinstance(server, str) or not isinstance(nonce, str):
                raise error_for("protocol_error", "a challenge without server and nonce")
            if self.server_name is not None and server != self.server_name:
                raise error_for(
                    "auth_failed",
                    f"the challenge is for server {server!r}, not {self.server_name!r}: not signing",
                )
            signature = self.key.sign(signed_bytes(server, self.username or "", nonce))
            return "send", {"header": {"signature": base64.b64encode(signature).decode()}}
        if kind == "reply":
            data = frame.get("data")
            return "ok", data if isinstance(data, dict) else {}
        raise error_for("protocol_error", f"unexpected frame during login: {frame!r:.200}")


def redirect_target(frame: Dict[str, Any]) -> Tuple[str, str]:
    data = frame.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("url"), str):
        raise error_for("protocol_error", "a redirect without data.url")
    if not isinstance(data.get("token"), str) or not data["token"]:
        # Nothing to log in with there: the credentials are never sent to another server.
        raise error_for("redirect_refused", f"redirected to {data['url']} without a token")
    return data["url"], data["token"]


def check_redirect(current: Url, target: str, hops: int) -> Url:
    """The URL a redirect may go to, or the refusal: past :data:`MAX_REDIRECTS` in a row, a URL
    that does not parse, or from an encrypted transport to a clear one (the token would travel in
    clear)."""
    if hops >= MAX_REDIRECTS:
        raise error_for("too_many_redirects", f"more than {MAX_REDIRECTS} redirects in a row (the last to {target!r})")
    try:
        url = Url.parse(target)
    except ValueError as e:
        raise error_for("redirect_refused", f"redirect to a URL that does not parse: {e}") from None
    if current.tls and not url.tls:
        raise error_for("redirect_refused", f"redirect from {current.scheme}:// to {url.scheme}:// would send the token in clear")
    if url.username or url.password is not None:
        url = Url(url.scheme, url.host, url.port, None, None, url.path)
    return url


@dataclass
class Session:
    """The session's state across connections: who we are, the resume token and when it dies."""

    home: Url
    credentials: Credentials
    url: Url = field(init=False)
    user: Optional[str] = None
    server: Optional[str] = None
    resume: Optional[str] = field(default=None, repr=False)  # a secret: it logs the user in
    resume_expires: Optional[float] = None
    resume_issued: float = 0.0
    renewable: bool = True  # False once bester.token stops giving a later expiry (a token session's end)
    expires: Optional[float] = None  # a token session's end
    offer: List[str] = field(default_factory=list)  # features to offer at every login
    features: List[str] = field(default_factory=list)  # what the server accepted at the last login
    limits: Dict[str, Any] = field(default_factory=dict)  # the last login's data.limits

    def __post_init__(self) -> None:
        self.url = self.home

    @property
    def at_home(self) -> bool:
        return self.url.authority == self.home.authority and self.url.scheme == self.home.scheme

    def logins(self) -> "list[Login]":
        """The logins to try, in order: the resume token while it is valid; then, only at the
        URL the credentials were given for, the credentials themselves."""
        out = []
        if self.resume and (self.resume_expires is None or self.resume_expires > time.time() + 1):
            out.append(Login({"resume": self.resume}, features=self.offer))
        if self.at_home:
            c = self.credentials
            if c.any:
                out.append(Login(c.authentication(), key=c.key, username=c.username, server_name=c.server_name, features=self.offer))
        return out

    def logged_in(self, data: Dict[str, Any]) -> None:
        self.user = data.get("user", self.user)
        self.server = data.get("server", self.server)
        if "expires" in data:
            self.expires = data["expires"]
        features = data.get("features")
        self.features = [f for f in features if isinstance(f, str)] if isinstance(features, list) else []
        self.limits = data["limits"] if isinstance(data.get("limits"), dict) else {}
        self.renewable = True
        self.renewed(data, login=True)

    def renewed(self, data: Dict[str, Any], login: bool = False) -> None:
        if isinstance(data.get("resume"), str):
            new = data.get("resume_expires")
            if not login and self.resume_expires is not None and isinstance(new, (int, float)) and new <= self.resume_expires:
                self.renewable = False
            self.resume = data["resume"]
            self.resume_expires = data.get("resume_expires")
            self.resume_issued = time.time()

    def refreshed(self, token: str, data: Dict[str, Any]) -> None:
        """After ``bester.refresh``: the session's new end, and the JWT to log in with again."""
        if isinstance(data, dict) and "expires" in data:
            self.expires = data["expires"]
        if self.credentials.token is not None:
            self.credentials.token = token
        self.renewable = True  # the resume tokens may now live longer again

    def renew_at(self) -> Optional[float]:
        """When to ask for a new resume token (``bester.token``): two thirds into its life."""
        if not self.resume or not self.resume_expires or not self.renewable:
            return None
        return self.resume_issued + (self.resume_expires - self.resume_issued) * 2 / 3

    def redirected(self, url: Url, token: str) -> Login:
        self.url = url
        self.resume = None
        self.renewable = True
        return Login({"token": token}, features=self.offer)


def retry_with_next(error: BesterError) -> bool:
    """A resume token refused at login: try the next way of logging in."""
    return error.code in ("resume_expired", "resume_refused")
