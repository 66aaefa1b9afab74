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
  {"action":"later","seconds":S,"users":[...]} -> stop reading for S seconds, then sendClients to those users
  {"action":"to_servers","servers":[...],"data":D} -> sendServers to those servers, payload
                           {"type":"faulty","data":D} (so D says what the next server's faulty does);
                           with "replies":true the answer asks for the peers' replies
  {"action":"fill","bytes":N} -> reply {"fill":"xxx…"} with N x's
  {"action":"group_add","group":G,"users":[...]} -> a groupAdd push, then reply with the data
  {"action":"to_groups","groups":[...],"users":[...]} -> sendClients {"users","groups"}
  anything else         -> error "bad_request"
With BESTER_FAULTY_MODE=refuse it exits 1 at once, without connecting (a handler that won't start).
"""
import os
import sys
import time

from testloop import log, reply, run, send_to

GARBAGE = b"this is not JSON"


def handle(link, request):
    data = request["payload"].get("data")
    action = data.get("action") if isinstance(data, dict) else None
    log.info("request %s: %s", request["header"].get("request"), action)
    if action == "pid":
        return reply(request, {"pid": os.getpid()})
    if action == "env":
        prefixes = ("NOTIFY_", "LISTEN_", "WATCHDOG_")
        seen = {k: v for k, v in os.environ.items() if k.startswith(prefixes)}
        return reply(request, {"env": seen})
    if action == "echo":
        return reply(request, data)
    if action == "header":
        return reply(request, {"header": request["header"]})
    if action == "hang":
        return None
    if action == "crash":
        os._exit(3)
    if action == "garbage":
        link.sendall(len(GARBAGE).to_bytes(4, "little") + GARBAGE)
        return None
    if action == "stall":
        time.sleep(float(data.get("seconds", 2)))  # nothing is read from the socket meanwhile
        return reply(request, data)
    if action == "oversize":
        link.sendall((2 * 1024 * 1024).to_bytes(4, "little"))
        return None
    if action == "malformed":
        return {"header": {"status": "maybe", "request": request["header"]["request"]}}
    if action == "bogus_reply":
        bogus = dict(request, header=dict(request["header"], request="999999"))
        return [reply(bogus, {"bogus": True}), reply(request, data)]
    if action == "later":
        time.sleep(float(data.get("seconds", 2)))
        return send_to(request, "sendClients", data.get("users", []), data)
    if action == "send_to":
        return send_to(request, "sendClients", data.get("users", []), data)
    if action == "to_servers":
        answer = send_to(request, "sendServers", data.get("servers", []), data.get("data"))
        if data.get("replies"):
            answer["header"]["replies"] = True
        return answer
    if action == "group_add":
        change = {"group": data["group"], "users": data["users"]}
        add = {"header": {"status": "ok", "command": "groupAdd", "commandData": change, "id": "g"}}
        return [add, reply(request, data)]
    if action == "to_groups":
        answer = send_to(request, "sendClients", [], data)
        answer["header"]["commandData"] = {"users": data.get("users", []), "groups": data["groups"]}
        return answer
    if action == "fill":
        return reply(request, {"fill": "x" * int(data.get("bytes", 0))})
    return reply(request, {"error": 'data.action must be "pid", "echo", "hang", "crash" or "garbage"', "code": "bad_request"}, "error")


if __name__ == "__main__":
    if os.environ.get("BESTER_FAULTY_MODE") == "refuse":
        print("faulty: BESTER_FAULTY_MODE=refuse: exiting without connecting", file=sys.stderr)
        sys.exit(1)
    run(handle)
