#!/usr/bin/env python3
"""per_request.py: a program `bester handle --per-request` runs once per request (tests only).

Reads the request's data (JSON) on stdin; data.action decides:
  "env"   -> {"user","server","scope","kind","info"} from the BESTER_* environment
  "sleep" -> sleep data.seconds, recording how many copies run at once in data.dir, then
             {"most": the largest number of copies it saw running}
  "exit"  -> exit with data.status without writing
  "text"  -> write data.text as it is (not necessarily JSON)
  else    -> the data
"""
import json
import os
import sys
import time

data = json.load(sys.stdin)
action = data.get("action") if isinstance(data, dict) else None
if action == "env":
    keys = {"user": "BESTER_USER", "server": "BESTER_SERVER", "scope": "BESTER_SCOPE",
            "kind": "BESTER_REQUEST_KIND", "info": "BESTER_INFO"}
    print(json.dumps({k: os.environ.get(v) for k, v in keys.items()}))
elif action == "sleep":
    mine = os.path.join(data["dir"], str(os.getpid()))
    open(mine, "w").close()
    most = 0
    end = time.monotonic() + float(data["seconds"])
    while time.monotonic() < end:
        most = max(most, len(os.listdir(data["dir"])))
        time.sleep(0.01)
    os.unlink(mine)
    print(json.dumps({"most": most}))
elif action == "exit":
    sys.exit(int(data["status"]))
elif action == "text":
    sys.stdout.write(data["text"])
else:
    print(json.dumps(data))
