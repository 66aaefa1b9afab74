#!/usr/bin/env python3
"""Write the seed corpus of the `frames` fuzz target from protocol/vectors/*.json.

Each vector becomes one file in fuzz/seeds/frames/, named <vectors file>-<vector name>. A seed is
what the target reads: one byte choosing the read size (0: the whole stream in one read), then the
stream. A vector with "hex" gives its bytes as they are; one with only "json" (or "body") is framed
(4-byte little-endian length, then the UTF-8 text). The back-to-back "stream" vector is written
whole and cut into 1- and 7-byte reads too.

The vectors hold only client frames, so a few handler frames and a built-in call (EXTRA, shaped
like the examples in src/protocol/message.rs) are added as extra-<name>; without them the
fuzzer rarely gets a handler message through `parse_handler_message` within a short run.

Usage: python3 fuzz/make_seeds.py   (from anywhere; rewrites the directory)
"""

import json
import re
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "protocol" / "vectors"
OUT = ROOT / "fuzz" / "seeds" / "frames"

EXTRA = {
    "handler-reply": '{"header":{"status":"ok","request":"1"},"payload":{"type":"echo","data":{"a":[1,2.5e3,null]}}}',
    "handler-send-clients": '{"header":{"status":"ok","command":"sendClients","commandData":["alice","bob"],"id":"p1"},"payload":{"type":"chat","data":"hi"}}',
    "handler-send-servers": '{"header":{"status":"ok","command":"sendServers","commandData":["b"],"request":"2"},"payload":{"type":"chat"}}',
    "handler-send-handler": '{"header":{"status":"ok","command":"sendHandler","commandData":"audit","request":"3"},"payload":{"type":"audit","data":true}}',
    "handler-error": '{"header":{"status":"error","request":"4"},"payload":{"type":"echo","data":{"error":"no","code":"x"}}}',
    "client-authenticate": '{"header":{"scope":"client","id":"5"},"payload":{"type":"bester.authenticate","data":{"username":"alice","password":"secret"}}}',
}


def frame(text: str) -> bytes:
    body = text.encode("utf-8")
    return struct.pack("<I", len(body)) + body


def stream_of(case: dict):
    """The bytes of one vector, or None when it has neither hex nor a JSON text."""
    if isinstance(case.get("hex"), str):
        return bytes.fromhex(case["hex"])
    for key in ("json", "body"):
        if isinstance(case.get(key), str):
            return frame(case[key])
    return None


def cases(node, path):
    """Every object in the document that carries a vector, with a name for it."""
    if isinstance(node, dict):
        data = stream_of(node)
        if data is not None:
            yield node.get("name") or "-".join(path), data
            return
        for key, value in node.items():
            yield from cases(value, path + [key])
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from cases(value, path + [str(i)])


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.iterdir():
        old.unlink()
    count = 0
    for source in sorted(VECTORS.glob("*.json")):
        doc = json.loads(source.read_text(encoding="utf-8"))
        for name, data in cases(doc, []):
            base = f"{source.stem}-{slug(name)}"
            splits = [0, 1, 7] if name == "stream" else [0]
            for split in splits:
                suffix = f"-split{split}" if split else ""
                (OUT / (base + suffix)).write_bytes(bytes([split]) + data)
                count += 1
    for name, text in EXTRA.items():
        (OUT / f"extra-{name}").write_bytes(bytes([0]) + frame(text))
        count += 1
    print(f"wrote {count} seeds to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
