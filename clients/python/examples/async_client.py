"""The same with asyncio, and 64 requests in flight at once."""

import asyncio
import sys

import bester.aio


async def main(url: str) -> None:
    async with await bester.aio.connect(url) as client:
        replies = await asyncio.gather(*(client.request("echo", {"n": n}) for n in range(64)))
        print(len(replies), "answers")
        async for push in client.pushes():
            print(push.type, push.data)


asyncio.run(main(sys.argv[1]))
