// node-hl7-server 2.5.0 as a receiving system behind the gateway (tests/interop.rs):
//
//     node receiver.js
//
// Listens on 127.0.0.1 on a free port, prints `ready PORT`, answers every message AA with
// the server's own ACK (res.sendResponse) and keeps its connections open, until killed.
// It keeps what it read on a connection and parses all of it again with each message, so
// on a kept connection it answers the second message with the first one's MSA-2: the
// gateway must refuse that answer and stop reusing connections to it.
'use strict'
const { Server } = require('node-hl7-server')

const server = new Server({ bindAddress: '127.0.0.1' })
const inbound = server.createInbound({ port: 0 }, async (req, res) => {
  await res.sendResponse('AA')
})
inbound.on('listen', () => {
  console.log(`ready ${inbound._socket.address().port}`)
})
