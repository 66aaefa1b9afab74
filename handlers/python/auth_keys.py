#!/usr/bin/env python3
"""auth_keys.py: an auth handler that logs clients in by API key.

Configure it as the server's auth handler:

    [handlers.keys]
    command = ["python3", "{examples}/auth_keys.py", "/etc/besterd/api-keys"]
    [auth]
    handler = "keys"

A client then identifies with {"type":"client","authentication":{"apiKey":"<key>"}}. The key
file (its path is the first argument, or $BESTER_API_KEYS) has one key per line:

    <key> <user> [<info: a JSON object>]

e.g. `k-3f9a1c alice {"plan":"pro"}`; blank lines and lines starting with # are skipped. The file
is read again when it changes, so keys are added and revoked without a restart. The session's
info is {"via":"api-key"} plus the line's object: every handler sees it as header.from.info.

Keys are compared in constant time, and never logged. Requests that are not logins are refused.
Written with the Python package (`import bester`, clients/python), which sits beside this file as
`bester/`.
"""
import hmac
import json
import logging
import os
import sys

import bester
from bester.handler import setup_logging

log = logging.getLogger("auth_keys")


class Keys:
    """The key file, read again whenever its modification time or size changes."""

    def __init__(self, path):
        self.path = path
        self.seen = None
        self.entries = []  # (key bytes, user, info)

    def current(self):
        try:
            st = os.stat(self.path)
        except OSError as e:
            log.error("cannot read the key file %s: %s", self.path, e.strerror)
            self.entries, self.seen = [], None
            return self.entries
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self.seen:
            self.entries = self.read()
            self.seen = stamp
            log.info("%d keys from %s", len(self.entries), self.path)
        return self.entries

    def read(self):
        entries = []
        with open(self.path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                parts = line.split(None, 2)
                if len(parts) < 2:
                    log.warning("%s:%d: expected `<key> <user> [<info>]`; skipped", self.path, n)
                    continue
                info = {}
                if len(parts) == 3:
                    try:
                        info = json.loads(parts[2])
                    except ValueError:
                        info = None
                    if not isinstance(info, dict):
                        log.warning("%s:%d: info is not a JSON object; skipped", self.path, n)
                        continue
                entries.append((parts[0].encode(), parts[1], info))
        return entries

    def lookup(self, key):
        """The (user, info) of `key`, or None. Every entry is compared, so the time taken does
        not tell how much of a key matched or where it is in the file."""
        key = key.encode()
        found = None
        for entry_key, user, info in self.current():
            if hmac.compare_digest(entry_key, key) and found is None:
                found = (user, info)
        return found


def make_handler(keys):
    """A bester.Handler deciding logins against `keys` (a Keys) and refusing everything else."""
    # workers=0: logins are quick, and the key file is read again in order, on one thread.
    handler = bester.Handler(workers=0)

    @handler.login
    def login(request: bester.LoginRequest):
        key = request.authentication.get("apiKey")
        if not isinstance(key, str) or not key:
            raise bester.BesterError("auth_failed", 'log in with {"apiKey":"<key>"}')
        found = keys.lookup(key)
        if found is None:
            log.info("login from %s: unknown API key", request.address)
            raise bester.BesterError("auth_failed", "invalid API key")
        user, info = found
        return {"user": user, "info": {**info, "via": "api-key"}}

    @handler.on()
    def not_a_login(request: bester.Request):
        raise bester.BesterError("unknown_request", "this handler only decides logins")

    return handler


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("BESTER_API_KEYS")
    if not path:
        setup_logging()
        log.error("usage: auth_keys.py KEY-FILE (or set BESTER_API_KEYS)")
        sys.exit(2)
    make_handler(Keys(path)).run()


if __name__ == "__main__":
    main()
