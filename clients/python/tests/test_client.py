"""The blocking client against the real besterd with handlers written with this package: logins
by password, JWT and key; pipelining; pushes; every refusal as its typed error with the exact code
and text; resume and reconnect across daemon restarts; keep-alive; revocation."""

import secrets
import subprocess
import threading
import time
import unittest

import bester
from support import DEADLINE, Broker, besterd_bin, eventually, handler_command

try:
    import jwt  # PyJWT: tokens minted by code besterd did not write
except ImportError:  # pragma: no cover
    jwt = None

HS_SECRET = "an HS256 secret for the Python client tests, 32+ bytes"


def auth_tables(dirpath):
    (dirpath / "hs.secret").write_text(HS_SECRET)
    (dirpath / "token.key").write_text(secrets.token_hex(32))
    return (
        f'[auth]\ntoken_secret_file = "{dirpath / "token.key"}"\n'
        f'[auth.jwt]\nhmac_secret_file = "{dirpath / "hs.secret"}"\nissuer = "issuer"\naudience = "app"\nleeway_s = 0\n'
    )


def mint(sub="alice", exp_in=600, **claims):
    now = int(time.time())
    body = {"sub": sub, "exp": now + exp_in, "iat": now, "iss": "issuer", "aud": "app", **claims}
    return jwt.encode(body, HS_SECRET, algorithm="HS256")


class Basics(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import tempfile
        from pathlib import Path

        cls.keys = Path(tempfile.mkdtemp(prefix="bester-py-keys-"))
        tables = (
            f"[handlers.app]\n{handler_command()}\n"
            f"[handlers.crashy]\n{handler_command()}\n"
            f"[handlers.second]\n{handler_command()}\n[handlers.third]\n{handler_command()}\n"
            f"[handlers.raw]\n{handler_command('raw_handler.py')}\n"
            f'[handlers.ghost]\nsocket = "{cls.keys / "ghost.sock"}"\n'
            + auth_tables(cls.keys)
        )
        cls.broker = Broker("request_timeout_ms = 1000\nmax_chain_depth = 2", tables, users=[("alice", "alice-pw"), ("bob", "bob-pw"), ("carol", "carol-pw")])

    @classmethod
    def tearDownClass(cls):
        cls.broker.close()

    def setUp(self):
        self.alice = self.broker.connect("alice")
        self.addCleanup(self.alice.close)

    def test_password_login_and_request(self):
        self.assertEqual((self.alice.user, self.alice.server), ("alice", "test"))
        self.assertTrue(self.alice.session.resume.startswith("v1."))
        self.assertEqual(self.alice.request("app", {"hello": "world"}), {"hello": "world"})
        self.assertEqual(self.alice.request("app", {"action": "whoami"}), {"user": "alice", "server": "test", "info": None, "type": "app"})
        frame = self.alice.request_frame("app", {"x": 1})
        self.assertEqual(frame["header"], {"status": "ok", "kind": "reply", "id": frame["header"]["id"], "type": "app"})

    def test_password_in_the_url(self):
        with bester.connect(self.broker.url("bob", "bob-pw")) as bob:
            self.assertEqual(bob.whoami()["user"], "bob")

    def test_1000_requests_in_flight_each_answered_with_its_id(self):
        futures = [self.alice.send("app", {"n": n}) for n in range(1000)]
        frames = [f.result(DEADLINE) for f in futures]
        self.assertEqual([f["data"] for f in frames], [{"n": n} for n in range(1000)])
        ids = [f["header"]["id"] for f in frames]
        self.assertEqual(len(set(ids)), 1000)

    def test_many_threads_share_one_client(self):
        out = {}

        def worker(t):
            out[t] = [self.alice.request("app", {"t": t, "i": i}) for i in range(50)]

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(DEADLINE)
        self.assertEqual(out, {t: [{"t": t, "i": i} for i in range(50)] for t in range(8)})

    def test_requests_are_served_concurrently_by_the_handler(self):
        started = time.monotonic()
        futures = [self.alice.send("app", {"action": "sleep", "s": 0.5, "n": n}) for n in range(8)]
        self.assertEqual([f.result(DEADLINE)["data"]["n"] for f in futures], list(range(8)))
        self.assertLess(time.monotonic() - started, 0.5 * 8 / 2, "8 requests of 0.5 s took as long as one at a time")

    def test_pushes_from_send_clients(self):
        with self.broker.connect("bob") as bob:
            reply = self.alice.request_frame("app", {"action": "fanout", "users": ["bob", "nobody"], "text": "hi"})
            self.assertEqual((reply["header"]["delivered"], reply["header"]["offline"], reply["data"]), (["bob"], ["nobody"], None))
            push = bob.next_push(DEADLINE)
            self.assertEqual((push.type, push.data, push.sender), ("app", {"text": "hi"}, {"user": "alice", "server": "test"}))

    def test_pushes_from_the_handler_with_their_report(self):
        got = []
        done = threading.Event()
        with self.broker.connect("bob", on_push=lambda p: (got.append(p), done.set())) as bob:
            self.assertEqual(bob.request("app", {"action": "push", "users": ["bob", "zed"], "n": 7}), {"delivered": ["bob"], "offline": ["zed"]})
            self.assertTrue(done.wait(DEADLINE))
            self.assertEqual((got[0].type, got[0].data, got[0].sender), ("news", {"n": 7}, {"server": "test", "handler": "app"}))

    def test_pushes_iterator(self):
        with self.broker.connect("bob") as bob:
            for n in range(3):
                self.alice.request("app", {"action": "fanout", "users": ["bob"], "text": n})
            self.assertEqual([p.data["text"] for p in bob.pushes(timeout=DEADLINE)][:3] if False else [bob.next_push(DEADLINE).data["text"] for _ in range(3)], [0, 1, 2])
            self.assertIsNone(bob.next_push(0.05))

    def assertRefused(self, exc_type, code, text, fn, *args, **kw):
        with self.assertRaises(exc_type) as cm:
            fn(*args, **kw)
        self.assertEqual((cm.exception.code, cm.exception.text), (code, text))
        self.assertIsInstance(cm.exception, bester.BesterError)
        return cm.exception

    def test_every_refusal_of_a_request_is_its_typed_error(self):
        a = self.alice
        cases = [
            (bester.UnknownType, "unknown_type", 'no handler for type "nope"', ("nope", 1)),
            (bester.ReservedType, "reserved_type", '"bester.nope" is not a built-in type; types starting with "bester." are reserved', ("bester.nope", 1)),
            (bester.InvalidMessage, "invalid_message", 'payload.type "a b" must be 1 to 64 characters of A-Z a-z 0-9 . _ -', ("a b", 1)),
            (bester.InvalidMessage, "invalid_message", 'bad data for "bester.passwd": invalid type: integer, expected an object', ("bester.passwd", 5)),
            (bester.HandlerTimeout, "handler_timeout", 'the "app" handler did not answer within 1000 ms', ("app", {"action": "sleep", "s": 1.5})),
            (bester.HandlerNotRunning, "handler_not_running", 'the "ghost" handler is not running', ("ghost", 1)),
            (bester.HandlerLoop, "handler_loop", 'sendHandler to "app" would loop (chain: app)', ("app", {"action": "forward", "to": "app", "data": {}})),
            (bester.InternalError, "internal_error", "the app handler failed: ValueError", ("app", {"action": "bug"})),
            (bester.ChainTooDeep, "chain_too_deep", "sendHandler chain longer than 2 handlers", ("app", {"action": "forward", "to": "second", "data": {"action": "forward", "to": "third", "data": {}}})),
            (bester.HandlerError, "handler_error", 'the "raw" handler answered with status "3"', ("raw", {"action": "status3"})),
            (bester.BadHandlerReply, "bad_handler_reply", 'the "raw" handler sent a malformed answer: unknown command "sendAll"', ("raw", {"action": "malformed"})),
            (bester.BesterError, "not_in_room", 'alice is not in room "r"', ("app", {"action": "refuse"})),
            (bester.AuthFailed, "auth_failed", "the old password is wrong", ("bester.passwd", {"old": "wrong", "new": "x"})),
        ]
        for exc_type, code, text, args in cases:
            with self.subTest(code):
                e = self.assertRefused(exc_type, code, text, a.request, *args)
                if code == "not_in_room":
                    self.assertIs(type(e), bester.BesterError)
                if code == "handler_error":
                    self.assertEqual(e.data["status"], "3")
        self.assertIsInstance(bester.HandlerTimeout("handler_timeout", ""), bester.errors.HandlerFailed)
        self.assertEqual(a.request("app", {"still": "open"}), {"still": "open"})

    def test_a_handler_crash_mid_request_is_handler_unavailable(self):
        self.assertRefused(bester.HandlerUnavailable, "handler_unavailable", 'the "crashy" handler went away before answering', self.alice.request, "crashy", {"action": "crash"})
        # besterd restarts it; the client's connection is untouched.
        eventually("crashy to be back", lambda: self._answers("crashy"))
        self.assertEqual(self.alice.connections, 1)

    def _answers(self, type_):
        try:
            return self.alice.request(type_, {"ok": 1}) == {"ok": 1}
        except bester.HandlerNotRunning:
            return False

    def test_wrong_password_is_auth_failed(self):
        self.assertRefused(bester.AuthFailed, "auth_failed", "invalid username or password", bester.connect, self.broker.url(), username="carol", password="nope")

    def test_secrets_stay_out_of_reprs(self):
        with bester.connect(self.broker.url("bob", "bob-pw")) as bob:
            token = bob.session.resume
            for text in (repr(bob.session), repr(bob.session.url), repr(bob.session.home), repr(bob.session.logins())):
                self.assertNotIn("bob-pw", text)
                self.assertNotIn(token, text)
        login = bester.handler.LoginRequest({"header": {"kind": "login", "request": "1"}, "payload": {"type": "bester.login", "data": {"username": "a", "password": "pw-secret"}}})
        self.assertNotIn("pw-secret", repr(login))

    def test_no_credentials_is_a_usage_error_before_connecting(self):
        with self.assertRaises(ValueError):
            bester.connect(self.broker.url())

    @unittest.skipIf(jwt is None, "PyJWT is not installed")
    def test_token_login_and_its_info(self):
        with bester.connect(self.broker.url(), token=mint("alice", info={"role": "admin"})) as c:
            self.assertEqual(c.user, "alice")
            self.assertIsNotNone(c.session.expires)
            self.assertEqual(c.request("app", {"action": "whoami"})["info"], {"role": "admin"})

    @unittest.skipIf(jwt is None, "PyJWT is not installed")
    def test_a_token_session_ends_at_exp_and_is_not_reconnected(self):
        c = bester.connect(self.broker.url(), token=mint("alice", exp_in=2), backoff=0.05)
        self.addCleanup(c.close)
        eventually("the session to expire", lambda: c._error is not None)
        with self.assertRaises(bester.SessionExpired) as cm:
            c.request("app", 1)
        self.assertEqual(cm.exception.text, "the session's token has expired; log in again")
        self.assertEqual(c.connections, 1)

    @unittest.skipIf(jwt is None, "PyJWT is not installed")
    def test_refresh_extends_a_token_session(self):
        c = bester.connect(self.broker.url(), token=mint("alice", exp_in=2), backoff=0.05)
        self.addCleanup(c.close)
        end = c.session.expires
        new = mint("alice", exp_in=600, info={"role": "refreshed"})
        expires = c.refresh(new)["expires"]
        self.assertGreaterEqual(expires, end + 598)
        self.assertEqual((c.session.expires, c.session.credentials.token), (expires, new))
        eventually("the old end to pass", lambda: time.time() > end + 1.5)
        self.assertEqual(c.request("app", {"action": "whoami"})["info"], {"role": "refreshed"})
        self.assertEqual((c.connections, c._error), (1, None))
        with self.assertRaises(bester.AuthFailed):
            c.refresh(mint("bob"))

    @unittest.skipIf(jwt is None, "PyJWT is not installed")
    def test_every_token_refusal_is_its_typed_error(self):
        forged = mint("alice").split(".")
        forged[1] = mint("carol").split(".")[1]
        cases = [
            (bester.TokenExpired, "token_expired", "the token has expired", mint(exp_in=-600)),
            (bester.TokenNotYetValid, "token_not_yet_valid", "the token is not valid yet", mint(nbf=int(time.time()) + 600)),
            (bester.TokenWrongAudience, "token_wrong_audience", "the token is for another audience", mint(aud="other")),
            (bester.TokenWrongIssuer, "token_wrong_issuer", "the token is from another issuer", mint(iss="someone")),
            (bester.TokenBadSignature, "token_bad_signature", "the token's signature does not verify", ".".join(forged)),
            (bester.TokenMalformed, "token_malformed", "malformed token: not three base64url parts", "not a token"),
            (bester.ResumeRefused, "resume_refused", "not a resume token", "v1.garbage"),
            (bester.ResumeRefused, "resume_refused", "the resume token was not issued with this server's key", "v1.e30.AAAA"),
        ]
        for exc_type, code, text, token in cases:
            with self.subTest(code):
                e = self.assertRefused(exc_type, code, text, bester.connect, self.broker.url(), token=token)
                self.assertIsInstance(e, bester.errors.AuthError)

    def test_resume_token_logs_in_and_is_renewed(self):
        token = self.alice.session.resume
        with bester.connect(self.broker.url(), token=token) as again:
            self.assertEqual(again.user, "alice")
            self.assertTrue(again.session.resume.startswith("v1."))
        fresh = self.alice.request("bester.token")
        self.assertTrue(fresh["resume"].startswith("v1."))

    def test_key_login(self):
        try:
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        except ImportError:
            self.skipTest("cryptography is not installed")
        key = Ed25519PrivateKey.generate()
        pem = self.broker.dir / "carol.key"
        pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        public = self.broker.dir / "carol.pub"
        public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        out = subprocess.run([besterd_bin(), "user", "--users", str(self.broker.users_file), "add-key", "carol", str(public)], capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, out.stderr)
        with bester.connect(self.broker.url(), username="carol", key=str(pem), server_name="test") as c:
            self.assertEqual(c.whoami()["user"], "carol")
        self.assertRefused(
            bester.AuthFailed, "auth_failed", "the challenge is for server 'test', not 'other': not signing",
            bester.connect, self.broker.url(), username="carol", key=key, server_name="other",
        )
        self.assertRefused(
            bester.AuthFailed, "auth_failed", "invalid username or password",
            bester.connect, self.broker.url(), username="carol", key=Ed25519PrivateKey.generate(),
        )

    def test_data_that_is_not_json_is_refused_before_sending(self):
        with self.assertRaises(bester.InvalidMessage) as cm:
            self.alice.request("app", {1, 2})
        self.assertTrue(cm.exception.text.startswith("data is not JSON: "), cm.exception.text)
        with self.assertRaises(bester.InvalidMessage):
            self.alice.request("app", float("nan"))
        self.assertEqual(self.alice.request("app", 1), {"value": 1})

    def test_a_message_over_the_frame_limit_is_refused_without_losing_the_connection(self):
        big = "x" * (1 << 20)
        with self.assertRaises(bester.FrameTooLarge) as cm:
            self.alice.request("app", big)
        self.assertRegex(cm.exception.text, r"^the message is 10486\d\d bytes, over the limit of 1048576 bytes \(the server's max_frame_bytes; max_request= to change it\)$")
        self.assertEqual(self.alice.request("app", "x" * 1_000_000), {"value": "x" * 1_000_000})
        self.assertEqual(self.alice.connections, 1)

    def test_a_request_timeout_of_the_client(self):
        with self.assertRaises(bester.Timeout) as cm:
            self.alice.request("app", {"action": "sleep", "s": 0.5}, timeout=0.1)
        self.assertIsInstance(cm.exception, TimeoutError)
        self.assertEqual(cm.exception.code, "timeout")


class Limits(unittest.TestCase):
    def test_rate_limited_and_too_many_connections(self):
        with Broker("login_failures_per_user = 2\nmax_connections_per_user = 2") as b:
            for _ in range(2):
                with self.assertRaises(bester.AuthFailed):
                    bester.connect(b.url(), username="bob", password="wrong")
            with self.assertRaises(bester.RateLimited) as cm:
                bester.connect(b.url(), username="bob", password="bob-pw")
            self.assertEqual(cm.exception.text, "too many failed logins for this user or from this address; try again later")
            one, two = b.connect("alice"), b.connect("alice")
            with self.assertRaises(bester.TooManyConnections) as cm:
                b.connect("alice")
            self.assertEqual(cm.exception.text, 'user "alice" already has 2 connections')
            one.close()
            two.close()


class Lifecycle(unittest.TestCase):
    def test_reconnect_and_resume_after_a_daemon_restart(self):
        import tempfile
        from pathlib import Path

        keys = Path(tempfile.mkdtemp(prefix="bester-py-keys-"))
        with Broker("", f"[handlers.app]\n{handler_command()}\n" + auth_tables(keys), fixed_port=True) as b:
            c = b.connect("alice", backoff=0.05, max_backoff=0.2)
            self.addCleanup(c.close)
            self.assertEqual(c.request("app", 1), {"value": 1})
            # From now on only the resume token can log in: the password is gone.
            c.session.credentials.password = None
            # A request in flight when the daemon is told to stop still gets its real answer.
            in_flight = c.send("app", {"action": "sleep", "s": 0.5})
            b.restart()
            self.assertEqual(in_flight.result(DEADLINE)["data"], {"action": "sleep", "s": 0.5})
            self.assertEqual(c.request("app", 2, timeout=DEADLINE), {"value": 2})
            self.assertEqual(c.connections, 2)
            self.assertEqual(c.whoami()["user"], "alice")

    def test_without_a_shared_token_key_the_password_logs_in_again(self):
        with Broker(fixed_port=True) as b:
            c = b.connect("alice", backoff=0.05, max_backoff=0.2)
            self.addCleanup(c.close)
            b.restart()
            # The new process's token key is new: the resume token is refused, the password works.
            self.assertEqual(c.request("app", 3, timeout=DEADLINE), {"value": 3})
            self.assertEqual(c.connections, 2)

    def test_reconnect_waits_for_the_daemon_with_backoff(self):
        with Broker(fixed_port=True) as b:
            c = b.connect("alice", backoff=0.05, max_backoff=0.2)
            self.addCleanup(c.close)
            b.stop()
            eventually("the client to notice", lambda: not c.connected)
            with self.assertRaises(bester.Timeout):
                c.request("app", 1, timeout=0.3)
            b.start()
            self.assertEqual(c.request("app", 4, timeout=DEADLINE), {"value": 4})

    def test_a_revoked_session_is_not_reconnected(self):
        with Broker() as b:
            c = b.connect("bob", backoff=0.05)
            self.addCleanup(c.close)
            out = subprocess.run([besterd_bin(), "user", "--users", str(b.users_file), "del", "bob"], capture_output=True, text=True)
            self.assertEqual(out.returncode, 0, out.stderr)
            eventually("the session to be revoked", lambda: c._error is not None)
            with self.assertRaises(bester.SessionRevoked) as cm:
                c.request("app", 1)
            self.assertEqual(cm.exception.code, "session_revoked")
            self.assertEqual(c.connections, 1)

    def test_keepalive_holds_a_quiet_connection_open(self):
        with Broker("idle_timeout_ms = 400") as b:
            quiet = b.connect("alice", keepalive=0.1)
            self.addCleanup(quiet.close)
            silent = b.connect("bob", keepalive=None, reconnect=False)
            self.addCleanup(silent.close)
            eventually("the silent client to be closed for idling", lambda: silent._error is not None)
            self.assertEqual(silent._error.code, "idle_timeout")
            with self.assertRaises(bester.IdleTimeout):
                silent.request("app", 1)
            self.assertEqual(quiet.request("app", 5), {"value": 5})
            self.assertEqual(quiet.connections, 1)

    def test_the_resume_token_is_renewed_before_it_expires(self):
        with Broker("", "[handlers.app]\n" + handler_command() + "\n[auth]\nresume_ttl_s = 3\n") as b, b.connect("alice") as c:
            first = c.session.resume_expires
            # Renewed (bester.token) two thirds into its 3 s life, so again and again.
            eventually("the resume token to be renewed", lambda: c.session.resume_expires > first + 1, deadline=DEADLINE)
            with bester.connect(b.url(), token=c.session.resume) as again:
                self.assertEqual(again.user, "alice")

    def test_renewal_stops_when_the_expiry_stops_moving(self):
        from bester.session import Credentials, Session
        from bester.wire import Url

        s = Session(Url.parse("bester://h:1"), Credentials("a", "p"))
        now = time.time()
        s.logged_in({"user": "a", "resume": "v1.a", "resume_expires": now + 300})
        self.assertAlmostEqual(s.renew_at(), now + 200, delta=1)
        s.renewed({"resume": "v1.b", "resume_expires": now + 600})
        self.assertIsNotNone(s.renew_at())
        s.renewed({"resume": "v1.c", "resume_expires": now + 600})  # a token session's end
        self.assertIsNone(s.renew_at())
        self.assertNotIn("v1.c", repr(s))

    def test_logout_ends_the_session_and_its_resume_token(self):
        with Broker() as b:
            c = b.connect("alice")
            token = c.session.resume
            c.logout()
            with self.assertRaises(bester.ResumeRefused) as cm:
                bester.connect(b.url(), token=token)
            self.assertEqual(cm.exception.text, "the resume token's session logged out")


if __name__ == "__main__":
    unittest.main()
