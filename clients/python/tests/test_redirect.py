"""Redirects, from the shape the protocol gives them
(``{"header":{"status":"ok","kind":"redirect","id":…},"data":{"url":…,"token":…}}``): besterd
does not send them yet, so the redirecting server here is a small one of the test's own, and
the server redirected to is the real besterd (or a recording one, to see what it is sent)."""

import socket
import threading
import unittest

import bester
from bester import session, wire
from support import DEADLINE, Broker, eventually


class Server:
    """A frame server on loopback: ``script(n, identify_authentication, send)`` answers the
    identify of the n-th connection; ``on_message(frame, send)`` each later frame."""

    def __init__(self, script, on_message=None):
        self.script = script
        self.on_message = on_message
        self.logins = []  # the authentication objects received, in order
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"bester://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn, len(self.conns) - 1), daemon=True).start()

    def _serve(self, conn, n):
        codec = wire.Codec()

        def send(frame):
            conn.sendall(wire.encode_frame(frame))

        first = True
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                for body in codec.feed(data):
                    frame = wire.loads(body)
                    if first:
                        first = False
                        auth = frame["header"]["identify"]["authentication"]
                        self.logins.append(auth)
                        if not self.script(n, auth, send):
                            conn.close()
                            return
                    elif self.on_message:
                        self.on_message(frame, send)
        except OSError:
            return

    def drop_all(self):
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.sock.close()
        self.drop_all()


def redirect(url, token, id_=None):
    header = {"status": "ok", "kind": "redirect"}
    if id_ is not None:
        header["id"] = id_
    return {"header": header, "data": {"url": url, "token": token}}


def ok(user="alice", resume="v1.fake-resume"):
    return {"header": {"status": "ok", "kind": "reply"}, "data": {"user": user, "server": "fake", "resume": resume, "resume_expires": 4102444800}}


class Redirects(unittest.TestCase):
    def test_a_login_redirect_sends_only_the_token_and_never_the_password_there(self):
        def target_script(n, auth, send):
            if "resume" in auth:  # the reconnect after the drop below: refuse it
                send({"header": {"status": "error", "kind": "reply"}, "data": {"error": "not a resume token", "code": "resume_refused"}})
                return False
            send(ok())
            return True

        target = Server(target_script)
        home = Server(lambda n, auth, send: send(redirect(target.url, "the-token")) or False)
        self.addCleanup(target.close)
        self.addCleanup(home.close)
        client = bester.connect(home.url, username="alice", password="s3cret", backoff=0.02, max_backoff=0.05, timeout=DEADLINE)
        self.addCleanup(client.close)
        self.assertEqual(home.logins, [{"username": "alice", "password": "s3cret"}])
        self.assertEqual(target.logins, [{"token": "the-token"}])
        self.assertEqual(client.session.url.authority, target.url.split("://")[1])
        # The link drops: the client logs in again where it was sent, with the resume token only.
        target.drop_all()
        def refused():
            try:
                client.request("x", timeout=DEADLINE)
            except bester.ConnectionLost:  # sent before the drop was noticed
                return False
            except bester.ResumeRefused:
                return True

        eventually("the resume token to be refused", refused)
        self.assertEqual(target.logins, [{"token": "the-token"}, {"resume": "v1.fake-resume"}])
        self.assertEqual(len(home.logins), 1, "the password went back to the first server")
        for auth in target.logins:
            self.assertNotIn("password", auth)

    def test_a_request_redirected_to_the_real_daemon_is_answered_there(self):
        with Broker() as b:
            with bester.connect(b.url(), username="alice", password="alice-pw") as first:
                token = first.session.resume

            def on_message(frame, send):
                send(redirect(b.url(), token, frame["header"]["id"]))

            home = Server(lambda n, auth, send: send(ok()) or True, on_message)
            self.addCleanup(home.close)
            with bester.connect(home.url, username="alice", password="pw", timeout=DEADLINE) as client:
                self.assertEqual(client.request("app", {"where": "besterd"}), {"where": "besterd"})
                self.assertEqual(client.whoami()["server"], "test")
                self.assertEqual(client.session.url.authority, b.addr)

    def test_more_than_three_redirects_in_a_row(self):
        home = Server(lambda n, auth, send: send(redirect(home.url, f"t{n}")) or False)
        self.addCleanup(home.close)
        with self.assertRaises(bester.TooManyRedirects) as cm:
            bester.connect(home.url, username="alice", password="pw")
        self.assertEqual(cm.exception.text, f"more than 3 redirects in a row (the last to {home.url!r})")
        self.assertEqual(home.logins, [{"username": "alice", "password": "pw"}, {"token": "t0"}, {"token": "t1"}, {"token": "t2"}])

    def test_no_redirect_from_tls_to_clear_text(self):
        here = wire.Url.parse("bester+tls://a:1")
        for target in ("bester://b:2", "bester+ws://b:2"):
            with self.subTest(target), self.assertRaises(bester.RedirectRefused) as cm:
                session.check_redirect(here, target, 0)
            self.assertIn("would send the token in clear", cm.exception.text)
        self.assertEqual(session.check_redirect(here, "bester+wss://u:p@b:2", 0), wire.Url("bester+wss", "b", 2))
        with self.assertRaises(bester.RedirectRefused):
            session.check_redirect(here, "http://b", 0)


if __name__ == "__main__":
    unittest.main()
