"""The asyncio client against the real besterd: the same semantics as the blocking one."""

import asyncio
import unittest

import bester
import bester.aio
from support import DEADLINE, Broker, besterd_bin, handler_command


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, DEADLINE * 2))


class Async(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.broker = Broker("request_timeout_ms = 1000", f"[handlers.app]\n{handler_command()}\n[handlers.crashy]\n{handler_command()}\n", users=[("alice", "alice-pw"), ("bob", "bob-pw")])

    @classmethod
    def tearDownClass(cls):
        cls.broker.close()

    def connect(self, user="alice", **kw):
        kw.setdefault("timeout", DEADLINE)
        return bester.aio.connect(self.broker.url(), username=user, password=f"{user}-pw", **kw)

    def test_login_request_and_1000_in_flight(self):
        async def go():
            async with await self.connect() as c:
                self.assertEqual((c.user, c.server), ("alice", "test"))
                self.assertEqual(await c.request("app", {"a": 1}), {"a": 1})
                futures = [await c.send("app", {"n": n}) for n in range(1000)]
                frames = await asyncio.gather(*futures)
                self.assertEqual([f["data"] for f in frames], [{"n": n} for n in range(1000)])
                self.assertEqual(len({f["header"]["id"] for f in frames}), 1000)
                answers = await asyncio.gather(*(c.request("app", {"n": n}) for n in range(500)))
                self.assertEqual(answers, [{"n": n} for n in range(500)])

        run(go())

    def test_refusals_are_typed(self):
        async def go():
            async with await self.connect() as c:
                with self.assertRaises(bester.UnknownType) as cm:
                    await c.request("nope", 1)
                self.assertEqual(cm.exception.text, 'no handler for type "nope"')
                with self.assertRaises(bester.HandlerTimeout) as cm:
                    await c.request("app", {"action": "sleep", "s": 1.5})
                self.assertEqual(cm.exception.text, 'the "app" handler did not answer within 1000 ms')
                with self.assertRaises(bester.HandlerUnavailable) as cm:
                    await c.request("crashy", {"action": "crash"})
                self.assertEqual(cm.exception.text, 'the "crashy" handler went away before answering')
                with self.assertRaises(bester.Timeout):
                    await c.request("app", {"action": "sleep", "s": 0.5}, timeout=0.05)
                self.assertEqual(await c.request("app", 1), {"value": 1})
            with self.assertRaises(bester.AuthFailed) as cm:
                await bester.aio.connect(self.broker.url(), username="alice", password="nope")
            self.assertEqual(cm.exception.text, "invalid username or password")

        run(go())

    def test_pushes_as_an_async_iterator_and_a_callback(self):
        async def go():
            got = asyncio.Queue()

            async def on_push(push):
                await got.put(push)

            async with await self.connect("bob") as bob, await self.connect("alice", on_push=on_push) as alice:
                for n in range(3):
                    await alice.request("app", {"action": "fanout", "users": ["bob", "alice"], "text": n})
                seen = []
                async for push in bob.pushes(timeout=DEADLINE):
                    seen.append(push.data["text"])
                    if len(seen) == 3:
                        break
                self.assertEqual(seen, [0, 1, 2])
                # alice is the sender: she gets replies, never pushes, of her own messages.
                self.assertTrue(got.empty())
                await bob.request("app", {"action": "fanout", "users": ["alice"], "text": "to alice"})
                push = await asyncio.wait_for(got.get(), DEADLINE)
                self.assertEqual((push.data, push.sender["user"]), ({"text": "to alice"}, "bob"))

        run(go())


class AsyncLifecycle(unittest.TestCase):
    def test_reconnect_after_restart_and_revocation(self):
        with Broker(fixed_port=True) as b:

            async def go():
                c = await bester.aio.connect(b.url(), username="alice", password="alice-pw", backoff=0.05, max_backoff=0.2, timeout=DEADLINE)
                bob = await bester.aio.connect(b.url(), username="bob", password="bob-pw", backoff=0.05, timeout=DEADLINE)
                self.assertEqual(await c.request("app", 1), {"value": 1})
                await asyncio.get_running_loop().run_in_executor(None, b.restart)
                self.assertEqual(await c.request("app", 2), {"value": 2})
                self.assertEqual(c.connections, 2)
                self.assertEqual(await bob.request("app", 3), {"value": 3})
                proc = await asyncio.create_subprocess_exec(besterd_bin(), "user", "--users", str(b.users_file), "del", "bob", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
                self.assertEqual(await proc.wait(), 0)
                with self.assertRaises(bester.SessionRevoked):
                    for _ in range(200):
                        await bob.request("app", 4)
                        await asyncio.sleep(0.05)
                self.assertEqual(await c.request("app", 5), {"value": 5})
                await c.close()
                await bob.close()
                with self.assertRaises(bester.Closed):
                    await c.request("app", 6)

            run(go())


if __name__ == "__main__":
    unittest.main()
