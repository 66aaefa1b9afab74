#!/usr/bin/env python3
"""greeter.py: a greeter for the broker's redirect tests, and the session handler behind it.

payload.data decides what it does with each request:
  {"redirect": {SERVER: {"url": U, "token": T}}} on the server named SERVER (BESTER_SERVER)
                        -> a redirect answer to U with token T: the client is sent to U
  {"redirect": {SERVER: {"raw": {...}}}} -> a redirect answer with exactly that commandData
                        (for the commandData the broker must refuse)
  {"via": T, ...}       -> pass the rest of the data on to the handler of type T (sendHandler)
  {"to": [USER, ...], ...} -> sendClients: the data is pushed to those users (with
                        "store": true in the answer when the data has "store": true)
  {"hang": true}        -> never answer this request (keeps serving the others)
  anything else         -> reply {"server": BESTER_SERVER, "from": <header.from as received>}
So one script greets on one server and serves the session on the next one: a request sent again
after a redirect is answered by the server it was sent to.
With an argument FILE it is a plain greeter: every request is redirected, with "token":"mint", to
the URL that FILE holds when the request comes (the browser test writes it once the session
server is up).
"""
import os
import sys

from testloop import redirect, reply, run, send_to

SERVER = os.environ.get("BESTER_SERVER", "")


def handle(link, request):
    if len(sys.argv) > 1:
        with open(sys.argv[1]) as f:
            return redirect(request, f.read().strip(), "mint")
    data = request["payload"].get("data")
    data = data if isinstance(data, dict) else {}
    if "via" in data:
        rest = {k: v for k, v in data.items() if k != "via"}
        header = {"status": "ok", "command": "sendHandler", "commandData": data["via"],
                  "request": request["header"]["request"]}
        return {"header": header, "payload": {"type": data["via"], "data": rest}}
    where = (data.get("redirect") or {}).get(SERVER)
    if isinstance(where, dict) and "raw" in where:
        header = {"status": "ok", "command": "redirect", "commandData": where["raw"],
                  "request": request["header"]["request"]}
        return {"header": header}
    if isinstance(where, dict):
        return redirect(request, where["url"], where.get("token"))
    if "to" in data:
        answer = send_to(request, "sendClients", data["to"], data)
        if data.get("store"):
            answer["header"]["store"] = True
        return answer
    if data.get("hang"):
        return None
    return reply(request, {"server": SERVER, "from": request["header"].get("from")})


if __name__ == "__main__":
    run(handle)
