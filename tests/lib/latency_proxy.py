#!/usr/bin/env python3
"""latency_proxy.py: a TCP proxy on loopback that delays everything it
forwards by a fixed one-way latency, to measure and test what a network
round trip does to a client (tests and `make bench`; no root needed).

    latency_proxy.py --delay-ms MS --target HOST:PORT|/unix/socket [--port N]
                     [--port-file FILE]

Listens on 127.0.0.1 (a free port unless --port), prints the port on
stdout (and writes it to --port-file) once it accepts connections.  Each
accepted connection gets its own connection to the target.  Bytes read
from either side are written to the other side MS milliseconds after
they were read, in order: the link has that one-way latency (a round
trip costs 2 * MS) and no bandwidth limit.  The target may be a Unix
socket path (a PostgreSQL socket file such as /dir/.s.PGSQL.5432), so a
client reaching a server through the proxy authenticates as a local one.

Reading never pauses on purpose: a sender that writes small messages (a
walsender writes one per change) into a Unix socket fills its buffer with
a few hundred of them (each costs a whole socket buffer entry), so a
reader that paused between reads to batch them capped such a stream at
about 17 MB/s on the development VM (0.5 ms pauses), against 41 MB/s
without pausing.  Bytes that arrive while earlier ones wait are sent in
the same write when their times coincide.  Writing stops reading from
the other side while more than HIGH_WATER bytes wait to be written.

Signals: SIGUSR1 cuts every open connection at once (both sides see a
reset, as when a network path fails); SIGTERM/SIGINT exit.
"""
import argparse
import asyncio
import os
import signal
import socket
import struct
import sys

HIGH_WATER = 64 << 20


class Half(asyncio.Protocol):
    """One side of a proxied connection: what it reads goes, delayed, to
    its peer's transport."""

    def __init__(self, link):
        self.link = link
        self.transport = None
        self.peer = None          # the other Half
        self.batch = None         # [due, bytearray] being filled
        self.pending = 0          # bytes scheduled for the peer, not yet written
        self.paused = False

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self is self.link.client and self.link.server.transport is None:
            transport.pause_reading()     # until the target is connected

    def data_received(self, data):
        loop = self.link.loop
        now = loop.time()
        # bytes read within the same clock tick leave together
        if self.batch is not None and now + self.link.delay <= self.batch[0]:
            self.batch[1] += data
        else:
            self.batch = [now + self.link.delay, bytearray(data)]
            batch = self.batch
            loop.call_at(batch[0], self.release, batch)
        self.pending += len(data)
        if self.peer is not None and self.peer.transport is not None and \
                self.peer.transport.get_write_buffer_size() + self.pending > HIGH_WATER:
            self.paused = True    # the peer's resume_writing resumes us
            self.transport.pause_reading()

    def release(self, batch):
        if batch is self.batch:
            self.batch = None
        self.pending -= len(batch[1])
        if self.peer is not None and self.peer.transport is not None and not self.link.closed:
            self.peer.transport.write(bytes(batch[1]))
        if self.paused:
            self.resume()

    def resume(self):
        if self.link.closed or self.transport.is_closing():
            return
        if self.peer is not None and self.peer.transport is not None and \
                self.peer.transport.get_write_buffer_size() > HIGH_WATER:
            self.paused = True    # the peer's resume_writing resumes us
            return
        self.paused = False
        self.transport.resume_reading()

    def pause_writing(self):
        pass                      # resume() looks at the buffer size

    def resume_writing(self):
        if self.peer is not None and self.peer.paused:
            self.peer.resume()

    def eof_received(self):
        # forward the half close after the data before it
        self.link.loop.call_at(self.link.loop.time() + self.link.delay, self.forward_eof)
        return True

    def forward_eof(self):
        if self.peer is not None and self.peer.transport is not None and not self.link.closed:
            if self.peer.transport.can_write_eof():
                self.peer.transport.write_eof()

    def connection_lost(self, exc):
        self.link.close()


class Link:
    def __init__(self, proxy, loop):
        self.proxy = proxy
        self.loop = loop
        self.delay = proxy.delay
        self.closed = False
        self.client = Half(self)
        self.server = Half(self)
        self.client.peer, self.server.peer = self.server, self.client

    async def connect(self):
        try:
            if self.proxy.target_unix:
                await self.loop.create_unix_connection(lambda: self.server, self.proxy.target_unix)
            else:
                await self.loop.create_connection(lambda: self.server, *self.proxy.target_tcp)
        except OSError as e:
            print(f"latency_proxy: cannot reach the target: {e}", file=sys.stderr)
            self.close()
            return
        if self.client.transport is not None and not self.closed:
            self.client.transport.resume_reading()

    def close(self):
        if self.closed:
            return
        self.closed = True
        self.proxy.links.discard(self)
        for h in (self.client, self.server):
            if h.transport is not None:
                h.transport.close()

    def abort(self):
        """Reset both sides at once (SO_LINGER 0 sends RST)."""
        for h in (self.client, self.server):
            if h.transport is None:
                continue
            sock = h.transport.get_extra_info("socket")
            try:
                if sock is not None and sock.family != socket.AF_UNIX:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            h.transport.abort()
        self.closed = True
        self.proxy.links.discard(self)


class Proxy:
    def __init__(self, delay_ms, target):
        self.delay = delay_ms / 1000.0
        self.links = set()
        self.target_unix = target if target.startswith("/") else None
        if self.target_unix is None:
            host, _, port = target.rpartition(":")
            self.target_tcp = (host or "127.0.0.1", int(port))

    def accepted(self, loop):
        link = Link(self, loop)
        self.links.add(link)
        # hold the client's bytes until the target is connected
        loop.create_task(link.connect())
        return link.client

    def cut_all(self):
        for link in list(self.links):
            link.abort()


async def main():
    ap = argparse.ArgumentParser(description="TCP proxy with a fixed one-way latency")
    ap.add_argument("--delay-ms", type=float, required=True, help="one-way latency in milliseconds")
    ap.add_argument("--target", required=True, help="HOST:PORT or a Unix socket path")
    ap.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    ap.add_argument("--port-file", help="also write the port here")
    args = ap.parse_args()
    loop = asyncio.get_running_loop()
    proxy = Proxy(args.delay_ms, args.target)
    server = await loop.create_server(lambda: proxy.accepted(loop), "127.0.0.1", args.port)
    port = server.sockets[0].getsockname()[1]
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGUSR1, proxy.cut_all)
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, lambda: stop.done() or stop.set_result(None))
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.rename(tmp, args.port_file)
    print(port, flush=True)
    await stop
    server.close()
    proxy.cut_all()


if __name__ == "__main__":
    asyncio.run(main())
