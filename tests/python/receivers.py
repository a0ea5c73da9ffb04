"""Receiving systems as partners run them, for the gateway to route to (tests/gate_mllp.rs):

    python receivers.py hl7apy   hl7apy's MLLPServer: one message a connection, closed
                                 after its answer (a socketserver handler)
    python receivers.py hl7      python-hl7's asyncio server (hl7.mllp.start_hl7_server):
                                 keeps its connections, answers each message on it

Each listens on 127.0.0.1 on a free port, prints `ready PORT` and serves until killed. Its
answer is `MSH|^~\\&|<kind>|RECVFAC|<MSH-3>|<MSH-4>|<now>||ACK|C<connection>|P|2.3` then
`MSA|AA|<MSH-10>`: MSH-10 counts the connections (from 1), so a test can see pooling.
"""

import asyncio
import itertools
import sys
import threading
import time

CONNECTIONS = itertools.count(1)
LOCK = threading.Lock()


def answer(kind, request, connection):
    """The AA for `request` (an ER7 string), as this receiver writes it."""
    msh = request.split("\r")[0].split("|")
    field = lambda n: msh[n - 1] if len(msh) >= n else ""  # MSH-n (MSH-1 is the `|`)
    return (
        f"MSH|^~\\&|{kind}|RECVFAC|{field(3)}|{field(4)}|{time.strftime('%Y%m%d%H%M%S')}"
        f"||ACK|C{connection}|P|2.3\rMSA|AA|{field(10)}\r"
    )


def hl7apy_server():
    from hl7apy.mllp import AbstractErrorHandler, AbstractHandler, MLLPServer

    class Ack(AbstractHandler):
        def reply(self):
            with LOCK:
                connection = next(CONNECTIONS)
            return "\x0b" + answer("HL7APY", self.incoming_message, connection) + "\x1c\r"

    class Error(AbstractErrorHandler):
        def reply(self):
            # Any message type hl7apy has no handler for is answered the same way.
            with LOCK:
                connection = next(CONNECTIONS)
            return "\x0b" + answer("HL7APY", self.incoming_message, connection) + "\x1c\r"

    server = MLLPServer("127.0.0.1", 0, {"ORU^R01": (Ack,), "ERR": (Error,)})
    print(f"ready {server.server_address[1]}", flush=True)
    server.serve_forever()


async def hl7_server():
    import hl7.mllp

    async def serve(reader, writer):
        connection = next(CONNECTIONS)
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                writer.writemessage(hl7.parse(answer("PYHL7", str(message), connection)))
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    server = await hl7.mllp.start_hl7_server(serve, "127.0.0.1", 0)
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main():
    kind = sys.argv[1]
    if kind == "hl7apy":
        hl7apy_server()
    elif kind == "hl7":
        asyncio.run(hl7_server())
    else:
        raise SystemExit(f"unknown receiver {kind!r}: hl7apy or hl7")


if __name__ == "__main__":
    main()
