"""An authentication handler: accepts `{"username","password"}` against an application's own
table (here a dict) and gives the session an `info` object that every request then carries."""

import hmac

import bester

USERS = {"alice": ("correct horse", {"role": "admin"})}
handler = bester.Handler()


@handler.login
def login(request: bester.LoginRequest):
    auth = request.authentication
    entry = USERS.get(auth.get("username"))
    if entry is None or not hmac.compare_digest(entry[0].encode(), str(auth.get("password", "")).encode()):
        raise bester.BesterError("auth_failed", "invalid username or password")
    return {"user": auth["username"], "info": entry[1]}


if __name__ == "__main__":
    handler.run()
