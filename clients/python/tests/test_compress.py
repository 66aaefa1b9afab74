"""Feature negotiation and compressed frames (PROTOCOL.md §1.2, §2 "Features and limits") with
the real besterd: what the client offers, what it learns, that long messages cross compressed
both ways and arrive whole, that secrets never go compressed, and the codec's bounds."""

import asyncio
import unittest
import zlib

import bester
import bester.aio
from bester import wire
from support import DEADLINE, Broker, handler_command

CHAT = {
    "room": "room:1",
    "lines": [{"from": f"user{i}", "at": 1796400000 + i * 7, "text": f"line {i}: the quick brown fox {i * 31 % 97}"} for i in range(40)],
}


class Negotiation(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.broker = Broker(tables=f"[handlers.app]\n{handler_command()}\n")

    @classmethod
    def tearDownClass(cls):
        cls.broker.close()

    def test_a_client_that_offers_nothing_learns_nothing_and_sends_plain(self):
        with self.broker.connect("alice") as c:
            self.assertEqual((c.features, c.limits), ([], {}))
            self.assertEqual(c.request("app", CHAT), CHAT)
            self.assertEqual((c._conn.codec.inflated, c._conn.codec.deflated), (0, 0))

    def test_compress_is_accepted_with_the_limits_and_long_frames_go_compressed_both_ways(self):
        with self.broker.connect("alice", compress=True) as c:
            self.assertEqual(c.features, ["compress"])
            self.assertEqual(c.limits["max_frame_bytes"], 1048576)
            self.assertIn("max_in_flight", c.limits)
            for _ in range(3):
                self.assertEqual(c.request("app", CHAT), CHAT)
            codec = c._conn.codec
            self.assertEqual((codec.deflated, codec.inflated), (3, 3))
            # Short frames stay plain: the counts do not move.
            self.assertEqual(c.request("app", {"hello": "world"}), {"hello": "world"})
            self.assertEqual((codec.deflated, codec.inflated), (3, 3))

    def test_the_asyncio_client_negotiates_and_compresses_too(self):
        async def run():
            c = await bester.aio.connect(self.broker.url(), username="alice", password="alice-pw", compress=True, timeout=DEADLINE)
            try:
                self.assertEqual(c.features, ["compress"])
                self.assertEqual(await c.request("app", CHAT), CHAT)
                return c._conn.codec.deflated, c._conn.codec.inflated
            finally:
                await c.close()

        self.assertEqual(asyncio.run(run()), (1, 1))

    def test_over_websocket_compress_is_not_given_and_everything_stays_plain(self):
        broker = Broker(tables=f'[handlers.app]\n{handler_command()}\n[[listeners]]\nname = "ws"\nkind = "ws"\naddress = "127.0.0.1:0"\n')
        try:
            url = broker.url(scheme="bester+ws", listener="ws")
            with bester.connect(url, username="alice", password="alice-pw", compress=True, timeout=DEADLINE) as c:
                self.assertEqual(c.features, [])
                self.assertEqual(c.request("app", CHAT), CHAT)
                self.assertEqual(c._conn.codec.deflated, 0)
        finally:
            broker.close()


class Backlog(unittest.TestCase):
    def test_a_stored_backlog_right_behind_the_login_reply_comes_compressed_and_whole(self):
        # The pushes stored for bob go out in the loop turn that logs him in, so the first of
        # them can share a read with the identify reply that turns compression on.
        tables = f'[handlers.mail]\n{handler_command()}\noffline = "store"\n'
        with Broker("", tables) as b, b.connect("alice") as alice:
            texts = [f"{n}: " + "a long line of chat that is worth compressing " * 8 for n in range(5)]
            for text in texts:
                header = alice.request_frame("mail", {"action": "fanout", "users": ["bob"], "text": text})["header"]
                self.assertEqual(header["stored"], ["bob"])
            with b.connect("bob", compress=True) as bob:
                got = [bob.next_push(DEADLINE) for _ in texts]
                self.assertEqual([p.data for p in got], [{"text": t} for t in texts])
                self.assertTrue(all(p.stored for p in got))
                self.assertEqual(bob._conn.codec.inflated, len(texts))


class Codec(unittest.TestCase):
    def body(self, value):
        return wire.dumps(value)

    def test_secrets_and_short_bodies_are_never_compressed(self):
        codec = wire.Codec()
        codec.compress = True
        long = self.body(CHAT)
        refresh = {"header": {"scope": "client", "id": "1"}, "payload": {"type": "bester.refresh", "data": {"token": "x" * 600}}}
        self.assertTrue(wire.carries_secret(refresh))
        self.assertTrue(wire.carries_secret({"header": {"identify": {"type": "client"}}}))
        self.assertFalse(wire.carries_secret({"header": {"scope": "client", "id": "1"}, "payload": {"type": "chat", "data": 1}}))
        plain = codec.encode(self.body(refresh), secret=wire.carries_secret(refresh))
        self.assertEqual(plain[4:5], b"{")
        self.assertEqual(codec.encode(b'{"a":1}', secret=False)[4:], b'{"a":1}')
        packed = codec.encode(long, secret=False)
        self.assertEqual(packed[4:5], b"\0")
        self.assertLess(len(packed), len(long))
        self.assertEqual(zlib.decompress(packed[5:], -15), long)
        self.assertEqual(codec.deflated, 1)

    def deflated(self, body):
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        return b"\0" + c.compress(body) + c.flush()

    def framed(self, body):
        return len(body).to_bytes(4, "little") + body

    def test_compressed_frames_are_inflated_only_on_a_compressing_session(self):
        body = self.deflated(self.body(CHAT))
        codec = wire.Codec()
        (raw,) = codec.feed(self.framed(body))
        with self.assertRaises(bester.BesterError) as e:
            codec.open(raw)
        self.assertEqual(e.exception.code, "protocol_error")
        self.assertEqual(e.exception.text, 'a compressed frame on a session that did not negotiate "compress"')
        # The identify reply that turns compression on may share a read with compressed frames.
        bodies = codec.feed(self.framed(b'{"header":{"status":"ok","kind":"reply"}}') + self.framed(body) + self.framed(b'{"b":2}'))
        self.assertEqual(codec.open(bodies[0]), b'{"header":{"status":"ok","kind":"reply"}}')
        codec.compress = True
        self.assertEqual([codec.open(b) for b in bodies[1:]], [self.body(CHAT), b'{"b":2}'])
        self.assertEqual(codec.inflated, 1)

    def test_a_bomb_stops_one_byte_past_the_limit_and_broken_streams_are_refused(self):
        codec = wire.Codec(max_frame=4096)
        codec.compress = True
        bomb = self.deflated(b"{" + b" " * (2 << 20) + b"}")
        self.assertLess(len(bomb), 4096)
        with self.assertRaises(bester.BesterError) as e:
            codec.open(codec.feed(self.framed(bomb))[0])
        self.assertEqual((e.exception.code, e.exception.text), ("frame_too_large", "compressed frame inflates to over the limit of 4096 bytes"))
        for broken in (self.deflated(b'{"a":1}')[:-2], self.deflated(b'{"a":1}') + b"junk", b"\0\xff\xff\xff"):
            codec = wire.Codec()
            codec.compress = True
            with self.assertRaises(bester.BesterError) as e:
                codec.open(codec.feed(self.framed(broken))[0])
            self.assertEqual(e.exception.code, "protocol_error", broken)
            self.assertTrue(e.exception.text.startswith("compressed frame is not a valid DEFLATE stream"), e.exception.text)


if __name__ == "__main__":
    unittest.main()
