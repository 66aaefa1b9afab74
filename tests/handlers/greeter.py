#!/usr/bin/env python3
"""greeter.py: a greeter for the broker's redirect tests, and the session handler behind it.

payload.data decides what it does with each request:
  {"redirect": {SERVER: {"url": U, "token": T}}} on the server named SERVER (BESTER_SERVER)
                        -> besterlib.redirect(request, U, T): the client is sent to U
  {"redirect": {SERVER: {"raw": {...}}}} -> a redirect answer with exactly that commandData
                        (for the commandData the broker must refuse)
  {"via": T, ...}       -> pass the rest of the data on to the handler of type T (sendHandler)
  {"to": [USER, ...], ...} -> sendClients: the data is pushed to those users
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

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "handlers", "python"))  # the repo's besterlib
import besterlib  # noqa: E402

SERVER = os.environ.get("BESTER_SERVER", "")


def handle(request):
    if len(sys.argv) > 1:
        with open(sys.argv[1]) as f:
            return besterlib.redirect(request, f.read().strip(), "mint")
    data = besterlib.data_of(request)
    data = data if isinstance(data, dict) else {}
    if "via" in data:
        rest = {k: v for k, v in data.items() if k != "via"}
        return besterlib.send_handler(request, data["via"], rest)
    where = (data.get("redirect") or {}).get(SERVER)
    if isinstance(where, dict) and "raw" in where:
        header = {"status": "ok", "command": "redirect", "commandData": where["raw"],
                  "request": request["header"]["request"]}
        return {"header": header}
    if isinstance(where, dict):
        return besterlib.redirect(request, where["url"], where.get("token"))
    if "to" in data:
        return besterlib.send_clients(request, data["to"], data)
    if data.get("hang"):
        return None
    return besterlib.reply(request, {"server": SERVER, "from": request["header"].get("from")})


if __name__ == "__main__":
    besterlib.run(handle)
