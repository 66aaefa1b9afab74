"""A handler for the type `echo`: replies with the same data (besterd starts it with
BESTER_SOCKET set; `command = ["python3", "echo_handler.py"]` in [handlers.echo])."""

import bester

handler = bester.Handler(workers=0)  # quick: answered in order on the reading thread


@handler.on("echo")
def echo(request: bester.Request):
    return request.data


if __name__ == "__main__":
    handler.run()
