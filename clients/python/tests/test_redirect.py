"""Redirects and dead peers, against servers of the test's own. Redirects, from the shape the protocol gives them
(``{"header":{"status":"ok","kind":"redirect","id":…},"data":{"url":…,"token":…}}``): besterd
does not send them yet, so the redirecting server here is a small one of the test's own, and
the server redirected to is the real besterd (or a recording one, to see what it is sent)."""

import unittest

import bester
from bester import session, wire
from support import DEADLINE, Broker, FakeServer, eventually


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

        target = FakeServer(target_script)
        home = FakeServer(lambda n, auth, send: send(redirect(target.url, "the-token")) or False)
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

            home = FakeServer(lambda n, auth, send: send(ok()) or True, on_message)
            self.addCleanup(home.close)
            with bester.connect(home.url, username="alice", password="pw", timeout=DEADLINE) as client:
                self.assertEqual(client.request("app", {"where": "besterd"}), {"where": "besterd"})
                self.assertEqual(client.whoami()["server"], "test")
                self.assertEqual(client.session.url.authority, b.addr)

    def test_the_asyncio_client_follows_both_kinds(self):
        import asyncio

        import bester.aio

        with Broker() as b:
            with bester.connect(b.url(), username="alice", password="alice-pw") as first:
                tokens = [first.request("bester.token")["resume"] for _ in range(2)]

            def on_message(frame, send):
                send(redirect(b.url(), tokens[1], frame["header"]["id"]))

            by_request = FakeServer(lambda n, auth, send: send(ok()) or True, on_message)
            at_login = FakeServer(lambda n, auth, send: send(redirect(b.url(), tokens[0])) or False)
            self.addCleanup(by_request.close)
            self.addCleanup(at_login.close)

            async def go():
                async with await bester.aio.connect(at_login.url, username="alice", password="pw", timeout=DEADLINE) as c:
                    self.assertEqual((await c.whoami())["server"], "test")
                async with await bester.aio.connect(by_request.url, username="alice", password="pw", timeout=DEADLINE) as c:
                    self.assertEqual(await c.request("app", {"n": 1}), {"n": 1})
                    self.assertEqual(c.session.url.authority, b.addr)
                with self.assertRaises(bester.TooManyRedirects):
                    loop_server = FakeServer(lambda n, auth, send: send(redirect(loop_server.url, "t")) or False)
                    try:
                        await bester.aio.connect(loop_server.url, username="alice", password="pw")
                    finally:
                        loop_server.close()

            asyncio.run(go())
            self.assertEqual(at_login.logins, [{"username": "alice", "password": "pw"}])

    def test_more_than_three_redirects_in_a_row(self):
        home = FakeServer(lambda n, auth, send: send(redirect(home.url, f"t{n}")) or False)
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


class DeadPeer(unittest.TestCase):
    def test_a_server_that_stops_answering_is_left_for_a_new_connection(self):
        # Accepts every login, never answers a message: keep-alive pings go unanswered.
        server = FakeServer(lambda n, auth, send: send(ok(resume=f"v1.r{n}")) or True)
        self.addCleanup(server.close)
        client = bester.connect(server.url, username="alice", password="pw", keepalive=0.2, backoff=0.02)
        self.addCleanup(client.close)
        eventually("a second connection", lambda: len(server.logins) >= 2)
        # The new login is by the resume token the first one was given.
        self.assertEqual(server.logins[:2], [{"username": "alice", "password": "pw"}, {"resume": "v1.r0"}])


    def test_the_same_with_asyncio(self):
        import asyncio

        import bester.aio

        server = FakeServer(lambda n, auth, send: send(ok(resume=f"v1.r{n}")) or True)
        self.addCleanup(server.close)

        async def go():
            client = await bester.aio.connect(server.url, username="alice", password="pw", keepalive=0.2, backoff=0.02)
            try:
                for _ in range(int(DEADLINE / 0.05)):
                    if len(server.logins) >= 2:
                        break
                    await asyncio.sleep(0.05)
            finally:
                await client.close()

        asyncio.run(go())
        self.assertEqual(server.logins[:2], [{"username": "alice", "password": "pw"}, {"resume": "v1.r0"}])


class Urls(unittest.TestCase):
    def test_forms(self):
        u = wire.Url.parse("bester+wss://al%40ce:p%3Ass@[::1]:9/ws")
        self.assertEqual((u.scheme, u.host, u.port, u.username, u.password, u.path), ("bester+wss", "::1", 9, "al@ce", "p:ss", "/ws"))
        self.assertEqual(u.authority, "[::1]:9")
        self.assertTrue(u.tls and u.ws)
        self.assertNotIn("p:ss", repr(u))
        self.assertEqual(wire.Url.parse("bester://h").port, 2222)
        for bad in ("http://h:1", "bester://", "bester://h:99999"):
            with self.subTest(bad), self.assertRaises(ValueError):
                wire.Url.parse(bad)


if __name__ == "__main__":
    unittest.main()
