// node-hl7-client 3.2.0 as an integration engine runs it, sending through `hnsecure
// client`'s MLLP listener (tests/interop.rs):
//
//     node client.js HOST PORT COUNT APPLICATION [CA CERT KEY]
//
// With CA (and the engine's CERT and KEY), over TLS. Sends COUNT messages on one
// connection, each only once the one before is answered (the client's own queue sends
// the next before the answer otherwise: a bug of its own), and prints one line a message:
// `{"sent": MSH-10, "msa1": ..., "msa2": ..., "sender": MSH-3 of the answer}`.
// Exits 1 with the reason when an answer does not come within 30 s.
'use strict'
const fs = require('fs')
const { Client, Message } = require('node-hl7-client')

const [host, port, count, application, ca, cert, key] = process.argv.slice(2)
const tls = ca ? { ca: fs.readFileSync(ca), cert: fs.readFileSync(cert), key: fs.readFileSync(key) } : undefined

function stamp () {
  return new Date().toISOString().replace(/[-:T]/g, '').slice(0, 14)
}

async function main () {
  // TLS options are the Client's, not the connection's (the connection reads them there).
  const client = new Client({ host, tls })
  let answered = null
  const connection = client.createConnection(
    { port: Number(port), waitAck: true, maxConnectionAttempts: 3 },
    async (res) => { if (answered) answered(res.getMessage()) }
  )
  // A message sent before the socket is up is queued and a second socket opened: wait.
  await new Promise((resolve) => connection.once('connect', resolve))
  for (let i = 0; i < Number(count); i++) {
    const id = `NODE${process.pid}-${i}`
    const text = `MSH|^~\\&|NODEHL7|BC00000098|${application}|BC0003000|${stamp()}|TRAIN96|R03|${id}|D|2.3\rPID||9029274643^^^BC^PH\r`
    const answer = new Promise((resolve, reject) => {
      answered = resolve
      setTimeout(() => reject(new Error(`no answer to ${id} within 30 s`)), 30000).unref()
    })
    await connection.sendMessage(new Message({ text }))
    const m = await answer
    console.log(JSON.stringify({
      sent: id,
      msa1: m.get('MSA.1').toString(),
      msa2: m.get('MSA.2').toString(),
      sender: m.get('MSH.3').toString()
    }))
  }
  await connection.close()
  client.closeAll()
}

main().then(() => process.exit(0), (e) => { console.error(String(e)); process.exit(1) })
