//! Invariants of everything that reads bytes from the network or text from an operator,
//! for the fuzz targets (`fuzz/fuzz_targets/*.rs`) and for `tests/fuzz_regressions.rs`,
//! which replays the inputs kept in `tests/data/fuzz-wire/<target>/`. Each function
//! panics when an invariant fails; none may panic for any other reason.
#![allow(dead_code)]

use hnapi::envelope::{self, Direction, MasterKey};
use hnapi::transport::Frame;
use hnapi::xfer::hl7xfer::{Listener, Originator, StationId};
use hnapi::xfer::mllp::{self, Decoder};

/// Any bytes as a frame body: decoding never panics, and a frame that decodes encodes
/// to bytes that decode to the same frame.
pub fn frame_decode(input: &[u8]) {
    if let Ok(frame) = Frame::decode(input.to_vec()) {
        let mut wire = Vec::new();
        frame.encode(&mut wire);
        let again = Frame::decode(wire[4..].to_vec()).expect("an encoded frame decodes");
        assert_eq!(again, frame, "a frame survives encode and decode");
    }
}

/// A valid envelope, some of whose bytes are then flipped: it opens exactly when nothing
/// was changed, and then to its plaintext. Input: a count of flips, that many
/// (position u16, xor u8), then the plaintext.
pub fn envelope_open(input: &[u8]) {
    let key = MasterKey::new(7, [0x42; 32]);
    let Some((&count, rest)) = input.split_first() else {
        return;
    };
    let count = usize::from(count % 8);
    if rest.len() < count * 3 {
        return;
    }
    let (flips, plaintext) = rest.split_at(count * 3);
    let sealed = envelope::seal(
        &key,
        "BC00000098",
        Direction::Request,
        &[0; envelope::NONCE_LEN],
        1_800_000_000_000,
        plaintext,
    )
    .expect("sealing works");
    let mut bytes = sealed.bytes.clone();
    for flip in flips.chunks(3) {
        let at = usize::from(u16::from_be_bytes([flip[0], flip[1]])) % bytes.len();
        bytes[at] ^= flip[2];
    }
    let _ = envelope::read_header(&bytes);
    match envelope::open(&key, &bytes, Direction::Request) {
        Ok(opened) => {
            assert_eq!(bytes, sealed.bytes, "a changed envelope opened");
            assert_eq!(opened.plaintext, plaintext);
        }
        Err(_) => assert_ne!(bytes, sealed.bytes, "an intact envelope did not open"),
    }
    // And any bytes at all, as they come off the wire.
    let _ = envelope::open(&key, input, Direction::Response);
}

/// Any bytes, in pieces, to an HL7Xfer listener and to an originator: no panic; a
/// listener that took in a message responds with a well-formed answer; a rejection is
/// answered. The first byte sets the piece size.
pub fn hl7xfer(input: &[u8]) {
    let Some((&piece, bytes)) = input.split_first() else {
        return;
    };
    let piece = usize::from(piece % 16) + 1;
    let mut listener = Some(Listener::new([1, 2, 3, 4, 5, 6, 7, 8], 4096));
    for chunk in bytes.chunks(piece) {
        match listener.take().expect("present").feed(chunk) {
            Ok(next) => listener = Some(next),
            Err(rejected) => {
                let mut out = Vec::new();
                rejected.answer("BC01000018", "20261123120000-0800", &mut out);
                assert!(out.len() > 12, "a rejection is answered");
                break;
            }
        }
    }
    if let Some(Listener::Received(received)) = listener {
        let (message, _, responder) = received.into_parts();
        assert!(message.len() <= 4096);
        let mut out = Vec::new();
        responder.respond(b"MSH|^~\\&|A|B\r", &mut out).unwrap();
        assert_eq!(out.len(), 12 + 13);
    }
    let mut originator = Some(Originator::new(StationId::new("HOST", "127.0.0.1"), 4096));
    let mut out = Vec::new();
    for chunk in bytes.chunks(piece) {
        match originator
            .take()
            .expect("present")
            .feed(chunk, b"MSH|^~\\&|A\r", &mut out)
        {
            Ok(next) => originator = Some(next),
            Err(_) => break,
        }
    }
    if let Some(o) = originator
        && let Some(response) = o.response()
    {
        assert!(response.len() <= 4096);
    }
}

/// Any bytes, in pieces, to the MLLP decoder: no panic; every message is at most the
/// maximum and holds no end byte; re-framing the messages that can be framed (those
/// without a frame start byte) decodes to the same messages.
pub fn mllp_decode(input: &[u8]) {
    let Some((&piece, bytes)) = input.split_first() else {
        return;
    };
    let piece = usize::from(piece % 32) + 1;
    let max = 256;
    let mut decoder = Decoder::new(max);
    let mut messages = Vec::new();
    'feed: for chunk in bytes.chunks(piece) {
        let mut rest = chunk;
        loop {
            match decoder.decode(&mut rest) {
                Ok(Some(m)) => {
                    assert!(m.len() <= max, "a message above the maximum");
                    assert!(!m.contains(&mllp::END), "a message holding the end byte");
                    messages.push(m.into_owned());
                }
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }
    // A message holding a frame start (0x0B) cannot be framed again unambiguously: the
    // encoder refuses it, and leaves nothing behind.
    let mut wire = Vec::new();
    let mut framed = Vec::new();
    for m in &messages {
        let before = wire.len();
        match mllp::encode(m, &mut wire) {
            Ok(()) => framed.push(m.clone()),
            Err(_) => {
                assert!(m.contains(&mllp::START), "refused a message it can frame");
                assert_eq!(wire.len(), before, "a refused message left bytes behind");
            }
        }
    }
    let messages = framed;
    let mut again = Decoder::new(max);
    let mut rest = &wire[..];
    let mut decoded = Vec::new();
    while let Ok(Some(m)) = again.decode(&mut rest) {
        decoded.push(m.into_owned());
    }
    assert_eq!(decoded, messages, "re-framed messages decode to themselves");
}

/// Any text as client.toml, gate.toml and gard.toml: an error or a configuration, never
/// a panic.
pub fn config_load(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let base = std::path::Path::new("/nonexistent/hnsecure-fuzz");
    let _ = hnapi::client::ClientConfig::from_toml(text, base);
    let _ = hnapi::gate::GateConfig::from_toml(text, base);
    let _ = hnapi::gard::StoreConfig::parse(text);
}
