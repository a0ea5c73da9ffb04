"""An integration engine as partners run them: python-hl7's MLLP client (a real
third-party client, `pip install hl7`) sending through `hnsecure client`'s MLLP
listener to the sandbox's simulator.

    python mllp_engine.py HOST PORT DATA_DIR

Exits 0 when every request got its answer (MSA-2 its MSH-10), else 1 with the reason.
"""

import sys
import time

import hl7
from hl7.client import MLLPClient

EB_CR = b"\x1c\x0d"


def exchange(client, message):
    """Sends one message and returns the answer's bytes, without the MLLP frame."""
    answer = client.send_message(message)
    while not answer.endswith(EB_CR):  # python-hl7 reads once; a large answer may need more
        more = client.socket.recv(65536)
        if not more:
            raise SystemExit("the connection ended in the middle of an answer")
        answer += more
    return answer[1:-2]


def check(answer, request_id, want_msa1="AA"):
    parsed = hl7.parse(answer.decode("iso-8859-1"))
    msa = parsed.segment("MSA")
    if str(msa[1]) != want_msa1 or str(msa[2]) != request_id:
        raise SystemExit(f"request {request_id}: unexpected answer {answer!r}")


def main():
    host, port, data = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    stamp = time.strftime("%Y%m%d%H%M%S")
    sent = 0
    with MLLPClient(host, port) as client:
        # The Volume 5 examples, as an engine would send them (str, encoded UTF-8).
        for n in ("3", "4", "5", "6"):
            with open(f"{data}/v5_2_5_{n}_request.hl7", "rb") as f:
                text = f.read().decode("ascii").replace("\n", "\r")
            message = hl7.parse(text)
            control_id = f"PY{stamp}{n}"
            message.segment("MSH")[4] = "BC00000098"
            message.segment("MSH")[10] = control_id
            answer = exchange(client, str(message))
            parsed = hl7.parse(answer.decode("ascii"))
            msa = parsed.segment("MSA")
            # The simulator keeps state: adding the 2.5.3 client twice is an AE.
            if str(msa[2]) != control_id or str(msa[1]) not in ("AA", "AE"):
                raise SystemExit(f"2.5.{n}: unexpected answer {answer!r}")
            sent += 1
        # 50 loopback messages on the same connection, answered in order.
        for i in range(50):
            control_id = f"PYECHO{stamp}{i:03}"
            message = (
                f"MSH|^~\\&|PYENGINE|BC00000098|HNSIM-ECHO|BC0003000|{stamp}||R03|{control_id}|D|2.3\r"
                f"NTE|||python-hl7 message {i}\r"
            )
            answer = exchange(client, message)
            check(answer, control_id)
            if not answer.endswith(f"NTE|||python-hl7 message {i}\r".encode()):
                raise SystemExit(f"the echo changed the message: {answer!r}")
            sent += 1
    # ISO-8859-1, as MSH-18 says: the bytes come back unchanged.
    with MLLPClient(host, port, encoding="iso-8859-1") as client:
        control_id = f"PYLATIN{stamp}"
        message = (
            f"MSH|^~\\&|PYENGINE|BC00000098|HNSIM-ECHO|BC0003000|{stamp}||R03|{control_id}|D|2.3||||||8859/1\r"
            "NTE|||Caf\u00e9 cr\u00e8me\r"
        )
        answer = exchange(client, message)
        check(answer, control_id)
        if not answer.endswith(b"NTE|||Caf\xe9 cr\xe8me\r"):
            raise SystemExit(f"ISO-8859-1 bytes changed: {answer!r}")
        sent += 1
    print(f"python-hl7 {hl7.__version__}: {sent} messages through the MLLP listener, every answer matched")


if __name__ == "__main__":
    main()
