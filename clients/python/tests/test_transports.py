"""TLS, WebSocket and WebSocket over TLS against the real listeners of besterd (certificates
made here with ``cryptography``), and the WebSocket codec on frames a server may send."""

import asyncio
import datetime
import ipaddress
import struct
import tempfile
import unittest
from pathlib import Path

import bester
import bester.aio
from bester.wire import WsCodec
from support import DEADLINE, Broker, handler_command

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
except ImportError:  # pragma: no cover
    x509 = None


def make_pki(dirpath: Path):
    """A CA and a server certificate for 127.0.0.1 / localhost signed by it; and another CA."""
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(path, key):
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    def ca(cn):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(cn)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    ca_key, ca_cert = ca("bester test CA")
    _, other_cert = ca("another CA")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(name("localhost")).issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = (
        x509.CertificateBuilder().subject_name(name("alice")).issuer_name(ca_cert.subject).public_key(client_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (dirpath / "client-cert.pem").write_bytes(client.public_bytes(serialization.Encoding.PEM))
    write_key(dirpath / "client-key.pem", client_key)
    (dirpath / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (dirpath / "other-ca.pem").write_bytes(other_cert.public_bytes(serialization.Encoding.PEM))
    (dirpath / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_key(dirpath / "key.pem", key)


@unittest.skipIf(x509 is None, "cryptography is not installed")
class Transports(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pki = Path(tempfile.mkdtemp(prefix="bester-py-pki-"))
        make_pki(cls.pki)
        cert, key = cls.pki / "cert.pem", cls.pki / "key.pem"
        tables = f"""[handlers.app]
{handler_command()}
[[listeners]]
name = "tls"
kind = "tls"
address = "127.0.0.1:0"
cert = "{cert}"
key = "{key}"
[[listeners]]
name = "mtls"
kind = "tls"
address = "127.0.0.1:0"
cert = "{cert}"
key = "{key}"
client_ca = "{cls.pki / "ca.pem"}"
[[listeners]]
name = "ws"
kind = "ws"
address = "127.0.0.1:0"
[[listeners]]
name = "wss"
kind = "wss"
address = "127.0.0.1:0"
cert = "{cert}"
key = "{key}"
"""
        cls.broker = Broker("", tables)

    @classmethod
    def tearDownClass(cls):
        cls.broker.close()

    def url(self, scheme, listener):
        return self.broker.url("alice", "alice-pw", scheme=scheme, listener=listener)

    def check(self, client):
        with client:
            self.assertEqual(client.request("app", {"t": "€😀"}), {"t": "€😀"})
            futures = [client.send("app", {"n": n}) for n in range(300)]
            self.assertEqual([f.result(DEADLINE)["data"]["n"] for f in futures], list(range(300)))
            big = "x" * 200_000  # a WebSocket message with a 64-bit length, both ways
            self.assertEqual(client.request("app", {"big": big}), {"big": big})
            with bester.connect(self.url("bester", None).replace("alice:alice-pw", "bob:bob-pw")) as bob:
                bob.request("app", {"action": "fanout", "users": ["alice"], "text": "hi"})
            self.assertEqual(client.next_push(DEADLINE).data, {"text": "hi"})

    def test_tls(self):
        self.check(bester.connect(self.url("bester+tls", "tls"), ca=str(self.pki / "ca.pem")))

    def test_ws(self):
        self.check(bester.connect(self.url("bester+ws", "ws")))

    def test_wss(self):
        self.check(bester.connect(self.url("bester+wss", "wss"), ca=str(self.pki / "ca.pem")))

    def test_a_server_certificate_from_another_ca_is_refused(self):
        import ssl

        for scheme, listener in (("bester+tls", "tls"), ("bester+wss", "wss")):
            with self.subTest(scheme), self.assertRaises(ssl.SSLCertVerificationError):
                bester.connect(self.url(scheme, listener), ca=str(self.pki / "other-ca.pem"))

    def test_wrong_password_over_ws_is_auth_failed(self):
        with self.assertRaises(bester.AuthFailed) as cm:
            bester.connect(self.broker.url("alice", "nope", scheme="bester+ws", listener="ws"))
        self.assertEqual(cm.exception.text, "invalid username or password")

    def test_client_certificate_login(self):
        url = self.broker.url(scheme="bester+tls", listener="mtls")
        pair = (str(self.pki / "client-cert.pem"), str(self.pki / "client-key.pem"))
        with bester.connect(url, cert=pair, ca=str(self.pki / "ca.pem")) as c:
            self.assertEqual((c.user, c.whoami()["user"]), ("alice", "alice"))
            self.assertTrue(c.session.resume.startswith("v1."))

        async def go():
            async with await bester.aio.connect(url, cert=pair, ca=str(self.pki / "ca.pem")) as c:
                return await c.request("app", {"via": "mtls"})

        self.assertEqual(asyncio.run(go()), {"via": "mtls"})
        # Without a certificate that listener refuses in the TLS handshake (TLS 1.3: at the first read).
        import ssl

        with self.assertRaises((ssl.SSLError, bester.ConnectionLost)):
            bester.connect(self.broker.url("alice", "alice-pw", scheme="bester+tls", listener="mtls"), ca=str(self.pki / "ca.pem"))
        with self.assertRaises(ValueError):
            bester.connect(self.broker.url(), cert=pair)

    def test_asyncio_over_wss_and_tls(self):
        async def go(scheme, listener):
            async with await bester.aio.connect(self.url(scheme, listener), ca=str(self.pki / "ca.pem")) as c:
                answers = await asyncio.gather(*(c.request("app", {"n": n}) for n in range(200)))
                self.assertEqual(answers, [{"n": n} for n in range(200)])

        for scheme, listener in (("bester+tls", "tls"), ("bester+wss", "wss"), ("bester+ws", "ws")):
            with self.subTest(scheme):
                asyncio.run(go(scheme, listener))


def server_frame(opcode, payload, fin=True):
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + struct.pack(">H", n)
    else:
        head += bytes([127]) + struct.pack(">Q", n)
    return head + payload


def unmask(frame):
    """(fin, opcode, payload) of one masked client frame."""
    n = frame[1] & 0x7F
    pos = 2
    if n == 126:
        (n,) = struct.unpack(">H", frame[2:4])
        pos = 4
    elif n == 127:
        (n,) = struct.unpack(">Q", frame[2:10])
        pos = 10
    assert frame[1] & 0x80, "client frames must be masked"
    mask = frame[pos : pos + 4]
    data = bytes(b ^ mask[i % 4] for i, b in enumerate(frame[pos + 4 : pos + 4 + n]))
    return bool(frame[0] & 0x80), frame[0] & 0x0F, data


class WebSocketCodec(unittest.TestCase):
    def upgraded(self, max_frame=1 << 20):
        import base64
        import hashlib

        codec = WsCodec(max_frame)
        request = codec.handshake("h:1").decode()
        key = [line.split(": ")[1] for line in request.split("\r\n") if line.startswith("Sec-WebSocket-Key")][0]
        accept = base64.b64encode(hashlib.sha1(key.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()).decode()
        self.assertEqual(codec.feed(f"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: {accept}\r\n\r\n".encode()), [])
        return codec

    def test_a_wrong_accept_is_refused(self):
        codec = WsCodec()
        codec.handshake("h:1")
        with self.assertRaises(bester.BesterError) as cm:
            codec.feed(b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: AAAA\r\n\r\n")
        self.assertEqual(cm.exception.code, "protocol_error")
        with self.assertRaises(bester.BesterError) as cm:
            WsCodec().feed(b"HTTP/1.1 403 Forbidden\r\n\r\n")
        self.assertEqual(cm.exception.text, "WebSocket upgrade refused: HTTP/1.1 403 Forbidden")

    def test_client_frames_are_masked_and_sized(self):
        codec = self.upgraded()
        for n in (0, 125, 126, 65535, 65536, 200_000):
            body = bytes(range(256)) * (n // 256) + bytes(n % 256)
            self.assertEqual(unmask(codec.encode(body)), (True, 0x1, body))

    def test_fragments_are_reassembled_with_pings_between(self):
        codec = self.upgraded()
        stream = server_frame(0x1, b'{"a":', fin=False) + server_frame(0x9, b"p") + server_frame(0x0, b"1", fin=False) + server_frame(0x0, b"}")
        got = []
        for i in range(len(stream)):  # one byte at a time
            got += codec.feed(stream[i : i + 1])
        self.assertEqual(got, [b'{"a":1}'])
        self.assertEqual(unmask(codec.take_output()), (True, 0xA, b"p"))

    def test_close_is_echoed_with_its_code(self):
        codec = self.upgraded()
        codec.feed(server_frame(0x8, struct.pack(">H", 1008) + b"auth_failed"))
        self.assertTrue(codec.closed)
        self.assertEqual((codec.close_code, codec.close_reason), (1008, "auth_failed"))
        self.assertEqual(unmask(codec.take_output()), (True, 0x8, struct.pack(">H", 1008)))

    def test_bad_sequences_and_sizes(self):
        for stream, code in (
            (server_frame(0x0, b"x"), "protocol_error"),
            (server_frame(0x1, b"x", fin=False) + server_frame(0x1, b"y"), "protocol_error"),
            (server_frame(0x3, b""), "protocol_error"),
            (server_frame(0x1, b"x" * 2000, fin=False) + server_frame(0x0, b"y" * 2000), "frame_too_large"),
        ):
            with self.subTest(stream[:2].hex()), self.assertRaises(bester.BesterError) as cm:
                self.upgraded(max_frame=3000).feed(stream)
            self.assertEqual(cm.exception.code, code)


if __name__ == "__main__":
    unittest.main()
