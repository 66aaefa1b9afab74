"""Upper-cases data.text; with "forward": TYPE it passes the result on to that type's handler
(sendHandler), whose answer reaches the client. The same as handlers/node/upper.js."""

import re

import bester

TYPE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
handler = bester.Handler(workers=0)  # quick: answered in order on the reading thread


@handler.on()
def upper(request: bester.Request):
    data = request.data
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        raise bester.BesterError("bad_request", 'data must be an object with a string field "text"')
    out = {k: v for k, v in data.items() if k != "forward"}
    out["text"] = data["text"].upper()
    if "forward" not in data:
        return out
    forward = data["forward"]
    if not isinstance(forward, str) or not TYPE_NAME.match(forward):
        raise bester.BesterError("bad_request", "data.forward must be a type name: 1 to 64 of A-Z a-z 0-9 . _ -")
    return request.send_handler(forward, out)


if __name__ == "__main__":
    handler.run()
