"""An authentication handler (`[auth] handler = "auth"` in besterd's configuration): logins by API
key, `{"apiKey": "..."}`, against the application's own table (a dict here), each giving the
session an `info` object that every request of it then carries (`request.info`)."""

import hmac

import bester

KEYS = {"k-3f9a1c": ("alice", {"plan": "pro"})}
handler = bester.Handler()


@handler.login
def login(request: bester.LoginRequest):
    key = request.authentication.get("apiKey")
    for known, (user, info) in KEYS.items():
        if isinstance(key, str) and hmac.compare_digest(known.encode(), key.encode()):
            return {"user": user, "info": info}
    raise bester.BesterError("auth_failed", "invalid API key")


if __name__ == "__main__":
    handler.run()
