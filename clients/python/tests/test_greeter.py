"""The library against the daemon's own redirects and auth handler: a greeter server whose handler
(written with the package) redirects with a minted resume token to a second server sharing the
token key and the user store, and an auth handler (examples/login_handler.py) deciding logins."""

import asyncio
import secrets
import tempfile
import unittest
from pathlib import Path

import bester
import bester.aio
from support import DEADLINE, HERE, Broker, handler_command


def session_of(resume):
    """The session id in a resume token's claims (they are not encrypted: PROTOCOL.md §2)."""
    import base64
    import json

    claims = resume.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["s"]


class Greeter(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        keys = Path(tempfile.mkdtemp(prefix="bester-py-keys-"))
        (keys / "token.key").write_text(secrets.token_hex(32))
        auth = f'[auth]\ntoken_secret_file = "{keys / "token.key"}"\n'
        tables = f"[handlers.app]\n{handler_command()}\n{auth}"
        cls.target = Broker("", tables, name="target")
        cls.greeter = Broker("request_timeout_ms = 5000", tables, name="greeter", users_file=cls.target.users_file)

    @classmethod
    def tearDownClass(cls):
        cls.greeter.close()
        cls.target.close()

    def greet(self, at="greeter", url=None, token="mint"):
        return {"action": "redirect", "at": at, "url": url or f"bester://{self.target.addr}", "token": token}

    def test_a_request_redirected_by_the_greeter_is_answered_by_the_target_as_the_same_session(self):
        with self.greeter.connect("alice", timeout=DEADLINE) as c:
            before = c.session.resume
            in_flight = c.send("app", {"action": "sleep", "s": 3})
            self.assertEqual(c.request("app", self.greet()), {"served_by": "target", "user": "alice", "info": None})
            self.assertEqual(c.session.url.authority, self.target.addr)
            self.assertEqual(c.whoami()["server"], "target")
            self.assertEqual(session_of(c.session.resume), session_of(before), "not the same session")
            # The request in flight at the greeter when it redirected was not answered there.
            with self.assertRaises(bester.Redirected) as cm:
                in_flight.result(DEADLINE)
            self.assertEqual(cm.exception.text, 'the client was redirected before the "app" handler answered this request')
            self.assertEqual(c.connections, 2)
            self.assertEqual(c.request("app", {"n": 1}), {"n": 1})

    def test_a_redirect_loop_stops_after_three(self):
        with self.greeter.connect("alice", timeout=DEADLINE) as c:
            loop = self.greet(url=f"bester://{self.greeter.addr}")
            with self.assertRaises(bester.TooManyRedirects) as cm:
                c.request("app", loop)
            self.assertEqual(cm.exception.text, f"more than 3 redirects in a row (the last to 'bester://{self.greeter.addr}')")

    def test_a_redirect_without_a_token_is_not_followed(self):
        with self.greeter.connect("alice", timeout=DEADLINE, reconnect=False) as c:
            with self.assertRaises(bester.RedirectRefused) as cm:
                c.request("app", self.greet(token=None))
            self.assertEqual(cm.exception.text, f"redirected to bester://{self.target.addr} without a token")

    def test_the_asyncio_client_follows_it_too(self):
        async def go():
            async with await bester.aio.connect(self.greeter.url(), username="bob", password="bob-pw", timeout=DEADLINE) as c:
                answer = await c.request("app", self.greet())
                return answer, (await c.whoami())["server"]

        self.assertEqual(asyncio.run(go()), ({"served_by": "target", "user": "bob", "info": None}, "target"))

    def test_the_handler_helper_builds_the_vector_answer(self):
        import json

        from support import REPO

        vector = json.loads((REPO / "protocol" / "vectors" / "redirect.json").read_text())
        frames = {f["direction"]: json.loads(f["json"]) for f in vector["frames"]}
        answer = frames["handler_to_server"]
        request = bester.Request(frames["server_to_handler"])
        built = request.redirect(answer["header"]["commandData"]["url"], answer["header"]["commandData"]["token"]).frame
        built["header"]["request"] = request.token
        self.assertEqual(built, answer)
        target, token = bester.session.redirect_target(frames["server_to_client"])
        login = bester.session.Login({"token": token})
        self.assertEqual(login.first(), frames["client_to_target"])


class AuthHandler(unittest.TestCase):
    def test_logins_the_handler_decides(self):
        tables = f"[handlers.app]\n{handler_command()}\n[handlers.auth]\n{handler_command('../examples/login_handler.py')}\n[auth]\nhandler = \"auth\"\n"
        with Broker("", tables) as b:
            with bester.connect(b.url(), authentication={"apiKey": "k-3f9a1c"}, timeout=DEADLINE) as c:
                self.assertEqual(c.user, "alice")
                self.assertEqual(c.request("app", {"action": "whoami"})["info"], {"plan": "pro"})
            with self.assertRaises(bester.AuthFailed) as cm:
                bester.connect(b.url(), authentication={"apiKey": "k-nope"})
            self.assertEqual(cm.exception.text, "invalid API key")
            self.assertNotIn("k-3f9a1c", b.log())

            async def go():
                async with await bester.aio.connect(b.url(), authentication={"apiKey": "k-3f9a1c"}) as c:
                    return c.user

            self.assertEqual(asyncio.run(go()), "alice")
        self.assertTrue((HERE.parent / "examples" / "login_handler.py").exists())


if __name__ == "__main__":
    unittest.main()
