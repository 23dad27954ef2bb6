#!/usr/bin/env python3
"""The original proof of concept's echo server: select.select() and a queue
per connection, the idiomatic way (the Python docs' "select" example).

    /usr/bin/python3 tools/bench/python/select_echo.py --listen=127.0.0.1:0

select() takes descriptors below FD_SETSIZE (1024) only: past about 1,000
connections it raises ValueError and the server dies, as the original did.
"""
import argparse
import queue
import select
import socket


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", default="127.0.0.1:7007")
    host, port = parser.parse_args().listen.rsplit(":", 1)
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.setblocking(False)
    server.bind((host, int(port)))
    server.listen(4096)
    print("listening on %s:%d" % server.getsockname(), flush=True)

    inputs = [server]
    outputs = []
    message_queues = {}

    def drop(s):
        if s in outputs:
            outputs.remove(s)
        inputs.remove(s)
        s.close()
        del message_queues[s]

    while inputs:
        readable, writable, exceptional = select.select(inputs, outputs, inputs)
        for s in readable:
            if s is server:
                conn, _ = s.accept()
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                inputs.append(conn)
                message_queues[conn] = queue.Queue()
                continue
            try:
                data = s.recv(65536)
            except ConnectionError:
                data = b""
            if data:
                message_queues[s].put(data)
                if s not in outputs:
                    outputs.append(s)
            else:
                drop(s)
        for s in writable:
            if s not in message_queues:
                continue
            try:
                data = message_queues[s].get_nowait()
            except queue.Empty:
                outputs.remove(s)
                continue
            try:
                sent = s.send(data)
            except ConnectionError:
                drop(s)
                continue
            if sent < len(data):
                # Put the rest back in front: a new queue with it first.
                rest = queue.Queue()
                rest.put(data[sent:])
                while not message_queues[s].empty():
                    rest.put(message_queues[s].get_nowait())
                message_queues[s] = rest
        for s in exceptional:
            if s in message_queues:
                drop(s)


if __name__ == "__main__":
    main()
