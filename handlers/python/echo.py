#!/usr/bin/env python3
"""echo.py: the smallest besterd handler. Answers every request with its own type and data.

Run by the broker as `python3 handlers/python/echo.py` with BESTER_SOCKET and BESTER_TYPE set.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # find besterlib next to us
import besterlib  # noqa: E402


def handle(request):
    """Reply to the sender with the payload it sent."""
    return besterlib.reply(request, besterlib.data_of(request))


if __name__ == "__main__":
    besterlib.run(handle)
