"""Framing: besterlib's encoder and incremental decoder against protocol/vectors/frames.json."""
import json
import random
import unittest

import besterlib
from besterlib import FrameDecoder, FrameError, encode_frame

from tests.support import load_vectors, random_splits

VECTORS = load_vectors("frames.json")


class FrameVectors(unittest.TestCase):
    def test_limit_matches_the_vectors(self):
        self.assertEqual(besterlib.MAX_FRAME, VECTORS["max_frame"])

    def test_valid_frames_encode_and_decode(self):
        for v in VECTORS["valid"]:
            with self.subTest(v["name"]):
                obj = json.loads(v["json"])
                self.assertEqual(encode_frame(obj).hex(), v["hex"])
                self.assertEqual(FrameDecoder().feed(bytes.fromhex(v["hex"])), [obj])

    def expected_stream(self):
        return [json.loads(v["json"]) for v in VECTORS["valid"]]

    def test_stream_one_byte_at_a_time(self):
        stream = bytes.fromhex(VECTORS["stream"]["hex"])
        decoder, got = FrameDecoder(), []
        for i in range(len(stream)):
            got += decoder.feed(stream[i:i + 1])
        self.assertEqual(got, self.expected_stream())
        self.assertEqual(decoder.pending, 0)

    def test_stream_in_random_splits(self):
        stream = bytes.fromhex(VECTORS["stream"]["hex"])
        rng = random.Random(20261122)  # fixed seed: a failure can be replayed
        for _ in range(300):
            decoder, got = FrameDecoder(), []
            for piece in random_splits(stream, rng):
                got += decoder.feed(piece)
            self.assertEqual(got, self.expected_stream())

    def test_stream_in_one_read(self):
        self.assertEqual(FrameDecoder().feed(bytes.fromhex(VECTORS["stream"]["hex"])), self.expected_stream())

    def test_invalid_frames_are_rejected_with_their_code(self):
        for v in VECTORS["invalid"]:
            with self.subTest(v["name"]):
                with self.assertRaises(FrameError) as caught:
                    FrameDecoder(VECTORS["max_frame"]).feed(bytes.fromhex(v["hex"]))
                self.assertEqual(caught.exception.code, v["code"])

    def test_invalid_frames_one_byte_at_a_time(self):
        for v in VECTORS["invalid"]:
            with self.subTest(v["name"]):
                data, decoder = bytes.fromhex(v["hex"]), FrameDecoder()
                with self.assertRaises(FrameError) as caught:
                    for i in range(len(data)):
                        decoder.feed(data[i:i + 1])
                self.assertEqual(caught.exception.code, v["code"])


class FrameLimits(unittest.TestCase):
    def test_absurd_nesting_is_a_frame_error_not_a_crash(self):
        with self.assertRaises(FrameError) as caught:
            besterlib.decode_body(b"[" * 100_000 + b"]" * 100_000)
        self.assertEqual(caught.exception.code, "invalid_json")

    def test_oversize_is_rejected_from_the_header_alone(self):
        header = (besterlib.MAX_FRAME + 1).to_bytes(4, "little")
        with self.assertRaises(FrameError) as caught:
            FrameDecoder().feed(header)
        self.assertEqual(caught.exception.code, "frame_too_large")

    def test_exactly_max_frame_is_accepted(self):
        body = b'"' + b"x" * (besterlib.MAX_FRAME - 2) + b'"'
        frame = len(body).to_bytes(4, "little") + body
        self.assertEqual(FrameDecoder().feed(frame), ["x" * (besterlib.MAX_FRAME - 2)])

    def test_encoding_an_oversize_frame_fails(self):
        with self.assertRaises(FrameError) as caught:
            encode_frame({"data": "x" * besterlib.MAX_FRAME})
        self.assertEqual(caught.exception.code, "frame_too_large")

    def test_decoder_stays_broken_after_an_error(self):
        decoder = FrameDecoder()
        with self.assertRaises(FrameError):
            decoder.feed(bytes.fromhex("0500000068656c6c6f"))
        with self.assertRaises(FrameError):
            decoder.feed(encode_frame({}))

    def test_nan_is_not_json(self):
        with self.assertRaises(FrameError) as caught:
            FrameDecoder().feed(b"\x03\x00\x00\x00NaN")
        self.assertEqual(caught.exception.code, "invalid_json")

    def test_bom_is_not_json(self):
        body = "\ufeff{}".encode("utf-8")
        with self.assertRaises(FrameError) as caught:
            FrameDecoder().feed(len(body).to_bytes(4, "little") + body)
        self.assertEqual(caught.exception.code, "invalid_json")


if __name__ == "__main__":
    unittest.main()
