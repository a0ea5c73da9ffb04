"""An integration engine over TLS MLLP: python-hl7's asyncio client
(`hl7.mllp.open_hl7_connection`) with an `ssl` context, sending through `hnsecure
client`'s TLS MLLP listener (tests/interop.rs):

    python tls_engine.py HOST PORT CA [CERT KEY]

Sends two messages on one connection, each after the answer to the one before, and
prints `answer MSA-1 MSA-2 SENT` for each. With CERT and KEY, as that engine; without,
with no client certificate. Exits 2 and prints `refused: ...` when the connection is
refused (an ssl error, or closed before an answer).
"""

import asyncio
import ssl
import sys
import time

import hl7
import hl7.mllp


async def main():
    host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    if len(sys.argv) > 5:
        context.load_cert_chain(sys.argv[4], sys.argv[5])
    stamp = time.strftime("%Y%m%d%H%M%S")
    try:
        reader, writer = await asyncio.wait_for(
            hl7.mllp.open_hl7_connection(host, port, ssl=context), 20
        )
        for n in range(2):
            control_id = f"PYTLS{stamp}{n}"
            request = (
                f"MSH|^~\\&|PYTLS|BC00000098|HNSIM-ECHO|BC0003000|{stamp}|TRAIN96|R03|{control_id}|D|2.3\r"
                f"NTE|||python-hl7 over TLS {n}\r"
            )
            writer.writemessage(hl7.parse(request))
            await writer.drain()
            answer = await asyncio.wait_for(reader.readmessage(), 20)
            msa = answer.segment("MSA")
            print(f"answer {msa[1]} {msa[2]} {control_id}", flush=True)
        writer.close()
    except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError, OSError) as e:
        print(f"refused: {type(e).__name__}: {e}", flush=True)
        sys.exit(2)


asyncio.run(main())
