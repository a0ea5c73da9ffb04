//! The envelope through its public API, as the client and the gateway use it: a
//! request sealed by a facility, read and opened by the gateway behind a replay guard,
//! and a response sealed back that names the request.

use std::time::Duration;

use hnapi::envelope::{
    self, Direction, EnvelopeError, MasterKey, NONCE_LEN, ReplayGuard, open, read_header, seal,
};

const REQUEST: &[u8] = b"MSH|^~\\&|HNWEB|VIHA|RAIGT-PRSN-DMGR|BC00001013|20170125122125|train96|R03|20170125122125|D|2.4\rPID||1234567890^^^BC^PH\r";
const ANSWER: &[u8] = b"MSH|^~\\&|RAIGT-PRSN-DMGR|BC00001013|HNWEB|VIHA|20170125122126|train96|ACK|20170125122125|D|2.4\rMSA|AA|20170125122125\r";

#[test]
fn a_transaction_there_and_back() {
    let facility_key = MasterKey::generate(3).unwrap();
    // The gateway's directory: key ids to keys.
    let directory = [MasterKey::generate(2).unwrap(), facility_key.clone()];
    let mut guard = ReplayGuard::new(Duration::from_secs(300), 10_000);

    let now = envelope::now_ms();
    let request = seal(
        &facility_key,
        "VIHA",
        Direction::Request,
        &[0; NONCE_LEN],
        now,
        REQUEST,
    )
    .unwrap();

    // Gateway: choose the key from the clear header, open, then check for replays.
    let header = read_header(&request.bytes).unwrap();
    assert_eq!(header.facility, "VIHA");
    let key = directory.iter().find(|k| k.id() == header.key_id).unwrap();
    let opened = open(key, &request.bytes, Direction::Request).unwrap();
    assert_eq!(opened.plaintext, REQUEST);
    assert_eq!(opened.header, header);
    guard.check(&opened.header, envelope::now_ms()).unwrap();

    // The same request again is a replay.
    let again = open(key, &request.bytes, Direction::Request).unwrap();
    assert_eq!(
        guard.check(&again.header, envelope::now_ms()),
        Err(EnvelopeError::Replayed)
    );
    assert_eq!(guard.len(), 1);

    // The answer goes back under a fresh nonce and names the request.
    let response = seal(
        key,
        "VIHA",
        Direction::Response,
        &request.nonce,
        envelope::now_ms(),
        ANSWER,
    )
    .unwrap();
    assert_ne!(response.nonce, request.nonce);
    // A response cannot pass for a request, nor a request for a response.
    assert_eq!(
        open(key, &response.bytes, Direction::Request).unwrap_err(),
        EnvelopeError::WrongDirection
    );
    let answer = open(&facility_key, &response.bytes, Direction::Response).unwrap();
    assert_eq!(answer.header.reply_to, request.nonce);
    assert_eq!(answer.plaintext, ANSWER);

    // Another facility's key is refused by id, and a stolen id without the key by MAC.
    assert_eq!(
        open(&directory[0], &request.bytes, Direction::Request).unwrap_err(),
        EnvelopeError::KeyMismatch
    );
    let impostor = MasterKey::generate(3).unwrap();
    assert_eq!(
        open(&impostor, &request.bytes, Direction::Request).unwrap_err(),
        EnvelopeError::BadMac
    );
}

#[test]
fn errors_read_as_sentences_without_envelope_data() {
    let text = EnvelopeError::BadMac.to_string();
    assert!(text.contains("authentication"), "{text}");
    let boxed: Box<dyn std::error::Error> = Box::new(EnvelopeError::Replayed);
    assert!(boxed.to_string().contains("replay"));
}
