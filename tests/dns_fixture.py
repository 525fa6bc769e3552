"""A DNS server on 127.0.0.1 for the tests: TXT answers from a dict, NXDOMAIN for everything
else, and names that never get an answer (a timeout). Every config file the tests write names
it as `dns_servers` (see `shared`), so no test ever asks a resolver beyond loopback."""

from __future__ import annotations

import socket
import threading

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


class DnsServer:
    def __init__(self) -> None:
        self.txt: dict[str, list[str]] = {}  # name (no trailing dot) -> TXT strings
        self.silent: set[str] = set()  # names that get no answer at all
        self.queries: list[str] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> DnsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.sock.close()

    def reset(self) -> None:
        self.txt.clear()
        self.silent.clear()
        self.queries.clear()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            try:
                reply = self._answer(dns.message.from_wire(data))
            except Exception:  # noqa: BLE001 - a garbled query gets no answer
                continue
            if reply is not None:
                self.sock.sendto(reply.to_wire(), peer)

    def _answer(self, query: dns.message.Message) -> dns.message.Message | None:
        question = query.question[0]
        name = question.name.to_text().rstrip(".").lower()
        self.queries.append(name)
        if name in self.silent:
            return None
        reply = dns.message.make_response(query)
        records = self.txt.get(name)
        if records is None:
            reply.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.TXT:
            chunks = [" ".join(f'"{c}"' for c in _split(r)) for r in records]
            reply.answer.append(dns.rrset.from_text(question.name, 60, "IN", "TXT", *chunks))
        return reply


def _split(record: str) -> list[str]:
    """TXT character-strings are at most 255 bytes: a DKIM key spans several."""
    return [record[i:i + 255] for i in range(0, len(record), 255)] or [""]


_SHARED: DnsServer | None = None


def shared() -> DnsServer:
    """The one server of this test session, started on first use."""
    global _SHARED
    if _SHARED is None:
        _SHARED = DnsServer().start()
    return _SHARED
