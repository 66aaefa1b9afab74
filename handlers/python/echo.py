#!/usr/bin/env python3
"""echo.py: the smallest besterd handler. Answers every request with its own type and data.

Run by the broker as `python3 handlers/python/echo.py` with BESTER_SOCKET and BESTER_TYPE set.
It is written with the Python package (clients/python, `import bester`), which sits beside it as
`bester/`: a link to clients/python/src/bester in the repository, the installed copy in the
Debian package, the copy besterd writes with its built-in examples.
"""
import bester

handler = bester.Handler(workers=0)  # quick: answered in order on the reading thread


@handler.on()
def echo(request: bester.Request):
    """Reply to the sender with the payload it sent (every type: the reply keeps the request's)."""
    return request.data


if __name__ == "__main__":
    handler.run()
