#!/usr/bin/env python3
"""An echo server on asyncio's Protocol API, the idiomatic fast way; with
--loop=uvloop the same code on uvloop (Debian's python3-uvloop, under
/usr/bin/python3).

    /usr/bin/python3 tools/bench/python/asyncio_echo.py --listen=127.0.0.1:0 [--loop=uvloop]
"""
import argparse
import asyncio
import signal


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def serve(host, port):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, host, port, backlog=4096)
    print("listening on %s:%d" % server.sockets[0].getsockname()[:2], flush=True)
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with server:
        await stop


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", default="127.0.0.1:7007")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    if args.loop == "uvloop":
        import uvloop
        uvloop.install()
    asyncio.run(serve(host, int(port)))


if __name__ == "__main__":
    main()
