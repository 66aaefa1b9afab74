#!/usr/bin/env python3
"""filter.py: a misbehaving line filter for `bester handle`'s tests (not an example to copy).

One request per line on stdin; payload.data.action decides what it writes for it:
  "echo"     -> the data, as one line
  "garbage"  -> a line that is not JSON
  "hang"     -> nothing, for ever (the adapter must time it out, kill it and start it again)
  "crash"    -> exit 3 at once
  "big"      -> one line of 2 MiB
  "answer"   -> data.answer as it is (a whole answer, for --answers)
  "pid"      -> {"pid": this process}
"""
import json
import os
import sys
import time

for line in sys.stdin:
    request = json.loads(line)
    data = request["payload"].get("data") or {}
    action = data.get("action")
    if action == "garbage":
        out = "this is not JSON"
    elif action == "hang":
        while True:
            time.sleep(60)
    elif action == "crash":
        os._exit(3)
    elif action == "big":
        out = json.dumps({"pad": "x" * (2 << 20)})
    elif action == "answer":
        out = json.dumps(data["answer"])
    elif action == "pid":
        out = json.dumps({"pid": os.getpid()})
    else:
        out = json.dumps(data)
    sys.stdout.write(out + "\n")
    sys.stdout.flush()
