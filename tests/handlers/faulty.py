#!/usr/bin/env python3
"""faulty.py: a misbehaving handler for the broker's integration tests (not an example to copy).

payload.data decides what it does with each request:
  {"action":"pid"}      -> reply {"pid": <this process id>}
  {"action":"env"}      -> reply {"env": {...}} with the service manager's variables it sees
                           (NOTIFY_SOCKET, LISTEN_*, WATCHDOG_*; the broker must strip them)
  {"action":"echo",...} -> reply with the data as it came
  {"action":"header"}   -> reply {"header": <the request's header as the handler got it>}
  {"action":"hang"}     -> never answer this request (keeps serving the others)
  {"action":"crash"}    -> exit at once with status 3, without answering
  {"action":"garbage"}  -> write a frame whose body is not JSON instead of an answer, keep serving
  {"action":"stall","seconds":S} -> stop reading the socket for S seconds, then answer
  {"action":"oversize"} -> write a length prefix over the broker's 1 MiB limit (the broker cuts it off)
  {"action":"bogus_reply"} -> first answer a request token nobody sent, then answer this one
  {"action":"malformed"} -> answer with this request's token but a status that is not one
  {"action":"send_to","users":[...]} -> sendClients to those users
  {"action":"to_servers","servers":[...],"data":D} -> sendServers to those servers, payload
                           {"type":"faulty","data":D} (so D says what the next server's faulty does);
                           with "replies":true the answer asks for the peers' replies
  {"action":"fill","bytes":N} -> reply {"fill":"xxx…"} with N x's
  anything else         -> error "bad_request"
With BESTER_FAULTY_MODE=refuse it exits 1 at once, without connecting (a handler that won't start).
"""
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "handlers", "python"))  # the repo's besterlib
import besterlib  # noqa: E402

GARBAGE = b"this is not JSON"


def handle(handler, request):
    data = besterlib.data_of(request)
    action = data.get("action") if isinstance(data, dict) else None
    besterlib.log.info("request %s: %s", request["header"].get("request"), action)
    if action == "pid":
        return besterlib.reply(request, {"pid": os.getpid()})
    if action == "env":
        prefixes = ("NOTIFY_", "LISTEN_", "WATCHDOG_")
        seen = {k: v for k, v in os.environ.items() if k.startswith(prefixes)}
        return besterlib.reply(request, {"env": seen})
    if action == "echo":
        return besterlib.reply(request, data)
    if action == "header":
        return besterlib.reply(request, {"header": request["header"]})
    if action == "hang":
        return None
    if action == "crash":
        os._exit(3)
    if action == "garbage":
        handler.send_raw(len(GARBAGE).to_bytes(4, "little") + GARBAGE)
        return None
    if action == "stall":
        time.sleep(float(data.get("seconds", 2)))  # nothing is read from the socket meanwhile
        return besterlib.reply(request, data)
    if action == "oversize":
        handler.send_raw((2 * 1024 * 1024).to_bytes(4, "little"))
        return None
    if action == "malformed":
        return {"header": {"status": "maybe", "request": request["header"]["request"]}}
    if action == "bogus_reply":
        bogus = dict(request, header=dict(request["header"], request="999999"))
        return [besterlib.reply(bogus, {"bogus": True}), besterlib.reply(request, data)]
    if action == "send_to":
        return besterlib.send_clients(request, data.get("users", []), data)
    if action == "to_servers":
        answer = besterlib.send_servers(request, data.get("servers", []), data.get("data"))
        if data.get("replies"):
            answer["header"]["replies"] = True
        return answer
    if action == "fill":
        return besterlib.reply(request, {"fill": "x" * int(data.get("bytes", 0))})
    return besterlib.error(request, "bad_request", 'data.action must be "pid", "echo", "hang", "crash" or "garbage"')


if __name__ == "__main__":
    besterlib.setup_logging()
    if os.environ.get("BESTER_FAULTY_MODE") == "refuse":
        besterlib.log.error("BESTER_FAULTY_MODE=refuse: exiting without connecting")
        sys.exit(1)
    handler = besterlib.Handler.connect()
    handler.serve(lambda request: handle(handler, request))
