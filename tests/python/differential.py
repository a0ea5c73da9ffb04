"""A differential receiving system for tests: an MLLP server that reads every frame it
gets with three HL7 parsers and logs what each saw, so a test can tell whether they all
read the same message and the same sender.

    python differential.py LOG [PORT_FILE]

Listens on 127.0.0.1, on an ephemeral port: writes the port to PORT_FILE, or, without
one, prints "ready PORT" on standard output. Connections are served at once, each in a
thread of its own, many frames to a connection.

Frames are split as a real receiver splits them (hl7apy's and python-hl7's servers,
HAPI): a frame's data begins after a 0x0B and ends at the first 0x1C 0x0D; a 0x0B or a
lone 0x1C inside it is data. Bytes outside frames are skipped and counted.

For EVERY frame one JSON line is appended to LOG (and flushed) before the frame is
answered:

    {"index": 0, "connection": 0, "length": 41, "skipped": 0,
     "hl7":    {"msh_count": 1, "msh4": "F^X", "msh4_1": "F", "msh10": "C1", "error": null},
     "hl7apy": {...}, "naive": {...}}

`index` counts frames over all connections, from 0; `skipped` is the bytes outside frames
before this one on its connection; `msh4` is MSH-4 whole and raw, `msh4_1` its first
component, as each parser reads them (null where a parser found no value or failed, with
`error` saying why). The parsers: python-hl7 (`hl7`), hl7apy, and a naive split
(segments on CR, fields on '|', components on '^'). The frame's bytes are decoded as
ISO-8859-1, so every byte reaches the parsers as one character.

The answer: MSH|^~\\&|RCV|RCVFAC|<MSH-3>|<MSH-4>|<now>||ACK|<MSH-10>|P|2.4 and
MSA|AA|<MSH-10>, the request's fields as the naive split reads them.
"""

import json
import os
import socketserver
import sys
import threading
import time
import traceback

import hl7
from hl7apy.parser import parse_message

START, END, CR = b"\x0b", b"\x1c", b"\x0d"

lock = threading.Lock()
counters = {"frame": 0, "connection": 0}
log_file = None


def reading(msh_count=None, msh4=None, msh4_1=None, msh10=None, error=None):
    return {
        "msh_count": msh_count,
        "msh4": msh4,
        "msh4_1": msh4_1,
        "msh10": msh10,
        "error": error,
    }


def failed(e):
    return reading(error=f"{type(e).__name__}: {e}"[:300])


def with_python_hl7(text):
    try:
        message = hl7.parse(text)
        count = sum(1 for segment in message if str(segment[0]) == "MSH")
        msh = message.segment("MSH")

        def field(n):
            try:
                return str(msh[n])
            except IndexError:
                return None

        try:
            first = message["MSH.F4.R1.C1"]
        except (IndexError, KeyError):
            first = None
        return reading(count, field(4), first, field(10))
    except Exception as e:  # noqa: BLE001 - any failure is a finding
        return failed(e)


def with_hl7apy(text):
    try:
        message = parse_message(text, find_groups=False)
        count = sum(1 for segment in message.children if segment.name == "MSH")
        msh = message.msh

        def whole(name):
            fields = getattr(msh, name)
            return fields[0].to_er7() if fields else None

        first = None
        msh4 = msh.msh_4
        if msh4 and msh4[0].children:
            first = msh4[0].children[0].to_er7()
        elif msh4:
            first = msh4[0].to_er7()
        return reading(count, whole("msh_4"), first, whole("msh_10"))
    except Exception as e:  # noqa: BLE001
        return failed(e)


def naive_fields(text):
    """The fields of the first MSH segment by the naive split, or None."""
    for segment in text.split("\r"):
        fields = segment.split("|")
        if fields[0] == "MSH":
            return fields
    return None


def with_naive(text):
    try:
        segments = text.split("\r")
        count = sum(1 for s in segments if s.split("|")[0] == "MSH")
        fields = naive_fields(text)
        if fields is None:
            return reading(count, error="no MSH segment")

        # fields[0] is "MSH", fields[1] MSH-2: MSH-n is fields[n - 1].
        def field(n):
            return fields[n - 1] if len(fields) >= n else None

        msh4 = field(4)
        return reading(count, msh4, None if msh4 is None else msh4.split("^")[0], field(10))
    except Exception as e:  # noqa: BLE001
        return failed(e)


def ack(text):
    fields = naive_fields(text) or []

    def field(n):
        return fields[n - 1] if len(fields) >= n else ""

    control = field(10)
    now = time.strftime("%Y%m%d%H%M%S")
    return (
        f"MSH|^~\\&|RCV|RCVFAC|{field(3)}|{field(4)}|{now}||ACK|{control}|P|2.4\r"
        f"MSA|AA|{control}\r"
    ).encode("iso-8859-1", errors="replace")


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        with lock:
            connection = counters["connection"]
            counters["connection"] += 1
        sock = self.request
        buf = b""
        skipped = 0
        while True:
            start = buf.find(START)
            if start < 0:
                skipped += len(buf)
                buf = b""
            else:
                skipped += start
                buf = buf[start:]
                end = buf.find(END + CR, 1)
                if end >= 0:
                    data, buf = buf[1:end], buf[end + 2:]
                    self.answer(connection, data, skipped)
                    skipped = 0
                    continue
            try:
                more = sock.recv(65536)
            except OSError:
                return
            if not more:
                return
            buf += more

    def answer(self, connection, data, skipped):
        text = data.decode("iso-8859-1")
        record = {
            "connection": connection,
            "length": len(data),
            "skipped": skipped,
            "hl7": with_python_hl7(text),
            "hl7apy": with_hl7apy(text),
            "naive": with_naive(text),
        }
        with lock:
            record = {"index": counters["frame"], **record}
            counters["frame"] += 1
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
        self.request.sendall(START + ack(text) + END + CR)


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    global log_file
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: differential.py LOG [PORT_FILE]")
    log_file = open(sys.argv[1], "a", encoding="utf-8")
    server = Server(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    if len(sys.argv) == 3:
        with open(sys.argv[2] + ".tmp", "w") as f:
            f.write(f"{port}\n")
        os.replace(sys.argv[2] + ".tmp", sys.argv[2])
    else:
        print(f"ready {port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        sys.exit(1)


if __name__ == "__main__":
    main()
