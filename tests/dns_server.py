"""A small, real DNS server for the verified-domain tests (dnslib), on a free UDP port
on loopback: it answers TXT questions from ``zone.txt`` (name -> values), NXDOMAIN for
names it does not hold, and SERVFAIL for everything while ``zone.failing`` is set (a
DNS outage). A test changes the zone while the gateway asks it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dnslib import QTYPE, RCODE, RR, TXT, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer


class Zone(BaseResolver):  # type: ignore[misc]
    def __init__(self) -> None:
        self.txt: dict[str, list[str]] = {}
        self.failing = False
        self.address = ""  # "127.0.0.1:<port>", for RINGFENCE_DNS_NAMESERVERS

    def publish(self, name: str, *values: str) -> None:
        self.txt[name.lower()] = list(values)

    def withdraw(self, name: str) -> None:
        self.txt.pop(name.lower(), None)

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply()
        if self.failing:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        name = str(request.q.qname).rstrip(".").lower()
        if name not in self.txt:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.TXT:
            for value in self.txt[name]:
                reply.add_answer(RR(name, QTYPE.TXT, rdata=TXT(value), ttl=0))
        return reply


@contextmanager
def running_dns() -> Iterator[Zone]:
    zone = Zone()
    server = DNSServer(zone, address="127.0.0.1", port=0, logger=DNSLogger(logf=lambda _: None))
    # Not server.start_thread(): its serve loop looks for the end every half second, and
    # stopping waited for that, a quarter of a second on average at each test's end.
    thread = threading.Thread(target=lambda: server.server.serve_forever(poll_interval=0.02))
    thread.daemon = True
    thread.start()
    try:
        zone.address = f"127.0.0.1:{server.server.server_address[1]}"
        yield zone
    finally:
        server.stop()
        thread.join(timeout=5)
        server.server.server_close()
