"""A public-key login to besterd done entirely with Python's `cryptography` and the standard
library, so the tests check the server against an implementation besterd did not write.

    ed25519_login.py keygen PRIVATE PUBLIC     write a key pair (PKCS#8 PEM, SPKI PEM)
    ed25519_login.py login HOST PORT SERVER USER PRIVATE
        identify with the key, sign the challenge for SERVER, ask bester.whoami; print each
        frame the server sends as one JSON line
"""

import json
import os
import socket
import struct
import sys
import base64

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def send(sock, value):
    body = json.dumps(value).encode()
    sock.sendall(struct.pack("<I", len(body)) + body)


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("closed")
        data += chunk
    return data


def recv(sock):
    (length,) = struct.unpack("<I", recv_exact(sock, 4))
    frame = json.loads(recv_exact(sock, length))
    print(json.dumps(frame, separators=(",", ":")), flush=True)
    return frame


def keygen(private_path, public_path):
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with open(public_path, "wb") as out:
        out.write(public)


def login(host, port, server, user, private_path):
    with open(private_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    raw = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    sock = socket.create_connection((host, int(port)), timeout=20)
    send(sock, {"header": {"identify": {"type": "client", "authentication": {
        "username": user, "publicKey": base64.b64encode(raw).decode()}}}})
    challenge = recv(sock)
    nonce = challenge["data"]["nonce"]
    message = b"besterd-login-v1\0" + server.encode() + b"\0" + user.encode() + b"\0" + nonce.encode()
    send(sock, {"header": {"signature": base64.b64encode(key.sign(message)).decode()}})
    reply = recv(sock)
    if reply["header"]["status"] != "ok":
        return
    send(sock, {"header": {"scope": "client", "id": "w"}, "payload": {"type": "bester.whoami"}})
    recv(sock)


if __name__ == "__main__":
    if sys.argv[1] == "keygen":
        keygen(*sys.argv[2:4])
    else:
        login(*sys.argv[2:7])
