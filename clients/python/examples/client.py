"""A client: log in, ask the echo handler, then print pushes as they come.

    python3 client.py bester://alice:secret@localhost:2222
"""

import sys

import bester

with bester.connect(sys.argv[1]) as client:
    print(client.request("echo", {"hello": "world"}))
    for push in client.pushes():
        print(push.sender.get("user"), push.type, push.data)
