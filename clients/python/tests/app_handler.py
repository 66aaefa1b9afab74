"""The handler the tests run under besterd, written with the package: one type, ``app``, whose
``data.action`` says what to do (``echo`` is the default)."""

import asyncio
import os
import sys
import time

import bester

# --listen: for `connect = "/path"`, listen on $BESTER_SOCKET and let besterd dial in.
handler = bester.Handler(workers=int(os.environ.get("APP_WORKERS", "32")), listen="--listen" in sys.argv)


@handler.on("asyncapp")
async def asyncapp(request: bester.Request):
    await asyncio.sleep(float((request.data or {}).get("s", 0)))
    return {"async": request.data, "user": request.user}


@handler.on()
def app(request: bester.Request):
    data = request.data if isinstance(request.data, dict) else {"value": request.data}
    action = data.get("action", "echo")
    if action == "echo":
        return data
    if action == "whoami":
        return {"user": request.user, "server": request.server, "info": request.info, "type": request.type}
    if action == "sleep":
        time.sleep(float(data.get("s", 0.1)))
        return data
    if action == "crash":
        sys.stderr.write("app_handler: crashing on request\n")
        os._exit(3)
    if action == "refuse":
        raise bester.BesterError("not_in_room", "alice is not in room \"r\"")
    if action == "bug":
        raise ValueError("a bug")
    if action == "fanout":
        return request.send_clients(data["users"], {"text": data.get("text")})
    if action == "forward":
        return request.send_handler(data["to"], data.get("data"))
    if action == "push":
        report = handler.push(data["users"], "news", {"n": data.get("n")}).result(10)
        return {"delivered": report.delivered, "offline": report.offline}
    if action == "pid":
        return os.getpid()
    if action == "redirect":  # a greeter: only on the server named "at"; elsewhere say who serves
        if os.environ.get("BESTER_SERVER") == data.get("at"):
            return request.redirect(data["url"], data.get("token", "mint"))
        return {"served_by": os.environ.get("BESTER_SERVER"), "user": request.user, "info": request.info}
    raise bester.BesterError("bad_request", f"unknown action {action!r}")


if __name__ == "__main__":
    handler.run()
