"""The LMTP floor for `make bench`: the least a Python LMTP server behind Postfix's lmtp(8) can
cost. Standard library only (asyncio); it saves each message (write, fsync, rename) and answers
250 once per recipient, nothing else: no parsing, no database.

    python3 -m benchmarks.lmtp_floor SOCKET DIR
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys

SEQ = itertools.count()


async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, out: str) -> None:
    writer.write(b"220 floor LMTP\r\n")
    rcpts = 0
    while line := await reader.readline():
        verb = line[:4].upper()
        if verb == b"LHLO":
            writer.write(b"250-floor\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
        elif verb == b"MAIL":
            rcpts = 0
            writer.write(b"250 2.1.0 OK\r\n")
        elif verb == b"RCPT":
            rcpts += 1
            writer.write(b"250 2.1.5 OK\r\n")
        elif verb == b"DATA":
            writer.write(b"354 go ahead\r\n")
            await writer.drain()
            body = []
            while (chunk := await reader.readline()) not in (b".\r\n", b""):
                body.append(chunk[1:] if chunk.startswith(b"..") else chunk)
            name = f"{out}/{next(SEQ)}"
            with open(name + ".tmp", "wb") as f:
                f.write(b"".join(body))
                f.flush()
                os.fsync(f.fileno())
            os.rename(name + ".tmp", name)
            writer.write(b"250 2.0.0 saved\r\n" * rcpts)
        elif verb == b"QUIT":
            writer.write(b"221 2.0.0 bye\r\n")
            break
        else:
            writer.write(b"250 2.0.0 OK\r\n")
        await writer.drain()
    writer.close()


async def main(path: str, out: str) -> None:
    server = await asyncio.start_unix_server(lambda r, w: session(r, w, out), path)
    os.chmod(path, 0o666)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
