"""Stored pushes against the real besterd, with both clients: kept while the user is away,
handed over once and in order with their ``msg``, acknowledged by the library (or by the
application with ``auto_ack=False``), and a copy that comes again after a reconnection not
handed over twice (PROTOCOL.md §4, "Stored delivery")."""

import asyncio
import threading
import unittest

import bester
import bester.aio
from bester.acks import ACK, DELIVER, DROP, Seen
from support import DEADLINE, Broker, eventually, handler_command

TABLES = f'[handlers.mail]\n{handler_command()}\noffline = "store"\n'


def mail(alice, n, to=("bob",)):
    """alice sends push ``n`` to ``to``; the reply says it was stored for them."""
    frame = alice.request_frame("mail", {"action": "fanout", "users": list(to), "text": n})
    return frame["header"]


def barrier(client):
    """Everything the server had for ``client`` when this was sent has been read: the reply to
    an empty ack comes after the backlog read (and the acks) before it."""
    assert client.request("bester.ack", {"msgs": []}) == {"acked": 0}


def queue_is_empty(b):
    """A fresh login (a client with no memory of ids) is sent nothing."""
    with b.connect("bob", reconnect=False) as fresh:
        barrier(fresh)
        return fresh.next_push(0) is None


class SeenSet(unittest.TestCase):
    def test_a_bounded_memory_of_ids_handed_over(self):
        seen = Seen(2)
        self.assertEqual(seen.arrived(None), DELIVER, "a push without an id is always handed over")
        self.assertEqual(seen.arrived("1"), DELIVER)
        self.assertEqual(seen.arrived("1"), DROP, "its ack is still to come")
        seen.owe("1")
        self.assertEqual(seen.take(), ["1"])
        self.assertEqual(seen.arrived("1"), ACK, "acknowledged before: again, not handed over")
        self.assertEqual(seen.take(), ["1"])
        seen.arrived("2")
        seen.arrived("3")
        self.assertEqual(len(seen), 2)
        self.assertEqual(seen.arrived("1"), DELIVER, "the oldest id was forgotten")
        seen.forget("3")
        self.assertEqual(seen.arrived("3"), DELIVER, "forgotten: not handed over after all")
        seen.owed = [str(i) for i in range(5000)]
        self.assertEqual(len(seen.take()), 4096, "at most 4096 ids per bester.ack")
        self.assertEqual(len(seen.owed), 904)


class Blocking(unittest.TestCase):
    def test_stored_pushes_come_once_in_order_and_are_acknowledged(self):
        with Broker("", TABLES) as b, b.connect("alice") as alice:
            for n in range(3):
                self.assertEqual(mail(alice, n)["stored"], ["bob"])
            with b.connect("bob") as bob:
                got = [bob.next_push(DEADLINE) for _ in range(3)]
                self.assertEqual([p.data for p in got], [{"text": n} for n in range(3)], "in order")
                self.assertTrue(all(p.stored and p.type == "mail" for p in got))
                self.assertEqual(len({p.msg for p in got}), 3)
                self.assertTrue(all(p.msg.isdigit() for p in got))
                barrier(bob)  # the library's ack went before this
                self.assertIsNone(bob.next_push(0))
            self.assertTrue(queue_is_empty(b), "the library acknowledged them")

    def test_a_callback_acknowledges_each_read_and_a_live_push_has_its_msg(self):
        with Broker("", TABLES) as b, b.connect("alice") as alice:
            got = []
            done = threading.Event()

            def on_push(push):
                got.append(push)
                if len(got) == 2:
                    done.set()

            with b.connect("bob", on_push=on_push) as bob:
                self.assertEqual(mail(alice, 1)["delivered"], ["bob"])
                mail(alice, 2)
                self.assertTrue(done.wait(DEADLINE))
                self.assertEqual([p.data["text"] for p in got], [1, 2])
                self.assertTrue(all(p.msg and not p.stored for p in got), "live, with its id")
                barrier(bob)
            self.assertTrue(queue_is_empty(b))

    def test_a_failing_callback_leaves_the_push_on_the_server(self):
        with Broker("", TABLES) as b, b.connect("alice") as alice:
            mail(alice, 1)

            def on_push(push):
                raise RuntimeError("the application failed")

            with b.connect("bob", on_push=on_push) as bob:
                barrier(bob)
            self.assertFalse(queue_is_empty(b), "not acknowledged")

    def test_manual_ack_keeps_them_until_acked_and_a_copy_after_a_reconnect_is_not_handed_over(self):
        with Broker("", TABLES, fixed_port=True) as b:
            with b.connect("alice") as alice:
                for n in range(3):
                    mail(alice, n)
            bob = b.connect("bob", auto_ack=False, backoff=0.05, max_backoff=0.2)
            self.addCleanup(bob.close)
            got = [bob.next_push(DEADLINE) for _ in range(3)]
            barrier(bob)
            self.assertFalse(queue_is_empty(b), "nothing acknowledged yet")
            # The connection dies before the application acknowledges: the server sends them
            # all again on the next login; the library does not hand them over again.
            b.restart()
            eventually("bob logged in again", lambda: bob.connections == 2)
            barrier(bob)
            self.assertIsNone(bob.next_push(0), "a copy was handed over twice")
            self.assertEqual(bob.ack(*got[:2]), 2)
            self.assertEqual(bob.ack(got[2].msg), 1)
            self.assertTrue(queue_is_empty(b))

    def test_an_ack_sent_before_a_reconnect_is_sent_again_for_the_copies(self):
        with Broker("", TABLES, fixed_port=True) as b:
            with b.connect("alice") as alice:
                for n in range(3):
                    mail(alice, n)
            bob = b.connect("bob", auto_ack=False, backoff=0.05, max_backoff=0.2)
            self.addCleanup(bob.close)
            got = [bob.next_push(DEADLINE) for _ in range(3)]
            b.stop()
            acking = threading.Thread(target=bob.ack, args=got)  # waits for the next connection
            acking.start()
            b.start()
            acking.join(DEADLINE)
            barrier(bob)  # the copies the login brought were acknowledged, not handed over
            self.assertIsNone(bob.next_push(0))
            self.assertTrue(queue_is_empty(b))

    def test_the_set_of_ids_is_bounded(self):
        with Broker("", TABLES) as b, b.connect("alice") as alice:
            for n in range(5):
                mail(alice, n)
            with b.connect("bob", auto_ack=False, max_seen=2) as bob:
                got = [bob.next_push(DEADLINE) for _ in range(5)]
                self.assertEqual(len(bob._seen), 2)
                self.assertEqual(bob.ack(*got), 5)
            with self.assertRaises(ValueError):
                bester.Client(b.url(), username="bob", password="bob-pw", max_seen=0)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, DEADLINE * 2))


class Async(unittest.TestCase):
    def connect(self, b, user="bob", **kw):
        kw.setdefault("timeout", DEADLINE)
        return bester.aio.connect(b.url(), username=user, password=f"{user}-pw", **kw)

    async def barrier(self, client):
        self.assertEqual(await client.request("bester.ack", {"msgs": []}), {"acked": 0})

    def test_stored_pushes_come_once_in_order_and_are_acknowledged(self):
        with Broker("", TABLES) as b, b.connect("alice") as alice:
            for n in range(3):
                self.assertEqual(mail(alice, n)["stored"], ["bob"])

            async def go():
                async with await self.connect(b) as bob:
                    got = [await bob.next_push(DEADLINE) for _ in range(3)]
                    self.assertEqual([p.data["text"] for p in got], [0, 1, 2])
                    self.assertTrue(all(p.stored and p.msg for p in got))
                    await self.barrier(bob)

            run(go())
            self.assertTrue(queue_is_empty(b))

    def test_a_coroutine_callback_acknowledges_when_it_is_done(self):
        with Broker("", TABLES) as b, b.connect("alice") as alice:
            mail(alice, 1)
            mail(alice, 2)

            async def go():
                got, done = [], asyncio.Event()

                async def on_push(push):
                    await asyncio.sleep(0)
                    got.append(push.data["text"])
                    if len(got) == 2:
                        done.set()

                async with await self.connect(b, on_push=on_push) as bob:
                    await asyncio.wait_for(done.wait(), DEADLINE)
                    await asyncio.sleep(0)  # the done callbacks, then the ack, run
                    await self.barrier(bob)
                    return got

            self.assertEqual(run(go()), [1, 2])
            self.assertTrue(queue_is_empty(b))

    def test_manual_ack_and_a_copy_after_a_reconnect_is_not_handed_over(self):
        with Broker("", TABLES, fixed_port=True) as b:
            with b.connect("alice") as alice:
                for n in range(3):
                    mail(alice, n)

            async def go():
                bob = await self.connect(b, auto_ack=False, backoff=0.05, max_backoff=0.2)
                got = [await bob.next_push(DEADLINE) for _ in range(3)]
                await self.barrier(bob)
                self.assertFalse(await asyncio.get_running_loop().run_in_executor(None, queue_is_empty, b))
                await asyncio.get_running_loop().run_in_executor(None, b.restart)
                while bob.connections < 2:
                    await asyncio.sleep(0.02)
                await self.barrier(bob)
                self.assertIsNone(await bob.next_push(0), "a copy was handed over twice")
                self.assertEqual(await bob.ack(*got), 3)
                await bob.close()

            run(go())
            self.assertTrue(queue_is_empty(b))


if __name__ == "__main__":
    unittest.main()
