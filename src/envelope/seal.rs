//! Sealing and opening envelopes: the layout, key derivation, TDES-EDE3-CBC and the
//! HMAC-SHA256 tag (see the [module documentation](super) for the format).
//!
//! Each envelope costs one HKDF, one 3DES pass over the plaintext and one HMAC pass
//! over the envelope. Sealing reserves the exact output size up front and encrypts
//! straight into it; opening verifies the tag over the received bytes, then decrypts
//! once into the plaintext buffer it returns.

use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use des::TdesEde3;
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use super::{
    Direction, EnvelopeError, Header, MAX_FACILITY_LEN, MasterKey, NONCE_LEN, Nonce, Opened,
    Sealed, TAG_LEN, VERSION,
};

type TdesCbcEncryptor = cbc::Encryptor<TdesEde3>;
type TdesCbcDecryptor = cbc::Decryptor<TdesEde3>;
type HmacSha256 = Hmac<Sha256>;

/// The HKDF info prefix; the direction byte follows it.
const INFO: &[u8] = b"hnsecure envelope v1";
/// The 3DES block size.
const BLOCK_LEN: usize = 8;
/// Header bytes besides the facility id: version, direction, facility length, key id,
/// timestamp, nonce, reply_to.
const FIXED_HEADER_LEN: usize = 1 + 1 + 1 + 4 + 8 + NONCE_LEN + NONCE_LEN;
/// Envelope bytes besides the facility id and the ciphertext.
const OVERHEAD: usize = FIXED_HEADER_LEN + 4 + TAG_LEN;

/// The 64 bytes derived for one envelope: the 3DES key, the IV and the HMAC key.
/// Wiped when dropped.
struct Keys(Zeroizing<[u8; 64]>);

impl Keys {
    fn derive(master: &MasterKey, nonce: &Nonce, direction: Direction) -> Self {
        let hkdf = Hkdf::<Sha256>::new(Some(nonce), master.as_bytes());
        let mut okm = Zeroizing::new([0u8; 64]);
        hkdf.expand_multi_info(&[INFO, &[direction.as_byte()]], okm.as_mut())
            .expect("64 bytes is far below HKDF-SHA256's limit of 8160");
        Self(okm)
    }

    fn tdes_key(&self) -> &[u8] {
        &self.0[..24]
    }

    fn iv(&self) -> &[u8] {
        &self.0[24..32]
    }

    fn mac_key(&self) -> &[u8] {
        &self.0[32..]
    }

    fn encryptor(&self) -> TdesCbcEncryptor {
        TdesCbcEncryptor::new_from_slices(self.tdes_key(), self.iv())
            .expect("a 24-byte key and an 8-byte IV are what TDES-EDE3-CBC takes")
    }

    fn decryptor(&self) -> TdesCbcDecryptor {
        TdesCbcDecryptor::new_from_slices(self.tdes_key(), self.iv())
            .expect("a 24-byte key and an 8-byte IV are what TDES-EDE3-CBC takes")
    }

    fn mac(&self) -> HmacSha256 {
        <HmacSha256 as KeyInit>::new_from_slice(self.mac_key())
            .expect("HMAC takes keys of any length")
    }
}

/// Refuses a facility id that is empty, longer than [`MAX_FACILITY_LEN`], or not
/// printable ASCII (space to `~`): it ends up in logs and audit records.
fn check_facility(facility: &[u8]) -> Result<(), EnvelopeError> {
    if (1..=MAX_FACILITY_LEN).contains(&facility.len())
        && facility.iter().all(|&b| (b' '..=b'~').contains(&b))
    {
        Ok(())
    } else {
        Err(EnvelopeError::BadFacility)
    }
}

/// The ciphertext length for a plaintext of `len` bytes: PKCS#7 always adds 1 to 8
/// bytes. `None` when it does not fit the u32 length field.
fn ciphertext_len(len: usize) -> Option<usize> {
    let c = (len / BLOCK_LEN).checked_add(1)?.checked_mul(BLOCK_LEN)?;
    u32::try_from(c).ok().map(|_| c)
}

/// Seals `plaintext` with a fresh random nonce from the operating system.
///
/// `direction` is the way the envelope travels; `reply_to` is, for a response, the
/// nonce of the request it answers ([`Sealed::nonce`] of that request) and, for a
/// request, all zero. `timestamp_ms` is now ([`now_ms`](super::now_ms)); the receiver's
/// [`ReplayGuard`](super::ReplayGuard) refuses it once it is outside its window.
///
/// # Errors
/// [`EnvelopeError::BadFacility`] for a facility id that is empty, longer than 32
/// bytes or not printable ASCII; [`EnvelopeError::TooLarge`] for a plaintext of 4 GiB
/// or more; [`EnvelopeError::Random`] when the random generator fails.
pub fn seal(
    key: &MasterKey,
    facility: &str,
    direction: Direction,
    reply_to: &Nonce,
    timestamp_ms: u64,
    plaintext: &[u8],
) -> Result<Sealed, EnvelopeError> {
    check_facility(facility.as_bytes())?;
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|_| EnvelopeError::Random)?;
    seal_with_nonce(
        key,
        facility,
        direction,
        reply_to,
        timestamp_ms,
        &nonce,
        plaintext,
    )
}

/// [`seal`] with a given nonce: for known-answer tests only. A nonce must never be
/// used twice with the same key.
pub(crate) fn seal_with_nonce(
    key: &MasterKey,
    facility: &str,
    direction: Direction,
    reply_to: &Nonce,
    timestamp_ms: u64,
    nonce: &Nonce,
    plaintext: &[u8],
) -> Result<Sealed, EnvelopeError> {
    let facility = facility.as_bytes();
    check_facility(facility)?;
    let facility_len = u8::try_from(facility.len()).map_err(|_| EnvelopeError::BadFacility)?;
    let c = ciphertext_len(plaintext.len()).ok_or(EnvelopeError::TooLarge)?;
    let c_field = u32::try_from(c).map_err(|_| EnvelopeError::TooLarge)?;
    let total = (OVERHEAD + facility.len())
        .checked_add(c)
        .ok_or(EnvelopeError::TooLarge)?;

    let mut out = Vec::with_capacity(total);
    out.push(VERSION);
    out.push(direction.as_byte());
    out.push(facility_len);
    out.extend_from_slice(facility);
    out.extend_from_slice(&key.id().to_be_bytes());
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out.extend_from_slice(nonce);
    out.extend_from_slice(reply_to);
    out.extend_from_slice(&c_field.to_be_bytes());
    let start = out.len();
    out.resize(start + c, 0);

    let keys = Keys::derive(key, nonce, direction);
    let written = keys
        .encryptor()
        .encrypt_padded_b2b::<Pkcs7>(plaintext, &mut out[start..])
        .expect("the buffer holds exactly the padded length")
        .len();
    debug_assert_eq!(written, c);

    let mut mac = keys.mac();
    mac.update(&out);
    out.extend_from_slice(&mac.finalize().into_bytes());
    debug_assert_eq!(out.len(), total);

    Ok(Sealed {
        bytes: out,
        nonce: *nonce,
    })
}

/// Reads the clear header of an envelope without any cryptography, to choose the key
/// to open it with. The whole envelope's structure is checked too (lengths, nothing
/// after the tag), but nothing in it is authentic until [`open`] succeeds.
///
/// # Errors
/// [`EnvelopeError::Truncated`], [`EnvelopeError::Malformed`],
/// [`EnvelopeError::UnsupportedVersion`], [`EnvelopeError::BadDirection`] or
/// [`EnvelopeError::BadFacility`] when the bytes are not a version 1 envelope.
pub fn read_header(bytes: &[u8]) -> Result<Header, EnvelopeError> {
    parse(bytes).map(|parsed| parsed.header)
}

/// Opens an envelope sealed with `key` travelling in the `expected` direction.
///
/// The structure is checked first, then the key id (it must be `key.id()`) and the
/// direction; then the tag is verified in constant time, and only then is the
/// ciphertext decrypted. The caller still passes the header through its
/// [`ReplayGuard`](super::ReplayGuard), and for a response checks that
/// `header.reply_to` is the nonce of its request.
///
/// # Errors
/// The structural errors of [`read_header`]; [`EnvelopeError::KeyMismatch`],
/// [`EnvelopeError::WrongDirection`], [`EnvelopeError::BadMac`] (altered, or sealed
/// with another key of the same id) and [`EnvelopeError::BadPadding`].
pub fn open(key: &MasterKey, bytes: &[u8], expected: Direction) -> Result<Opened, EnvelopeError> {
    let parsed = parse(bytes)?;
    let header = parsed.header;
    if header.key_id != key.id() {
        return Err(EnvelopeError::KeyMismatch);
    }
    if header.direction != expected {
        return Err(EnvelopeError::WrongDirection);
    }

    let keys = Keys::derive(key, &header.nonce, header.direction);
    let mut mac = keys.mac();
    mac.update(parsed.authenticated);
    mac.verify_slice(parsed.tag)
        .map_err(|_| EnvelopeError::BadMac)?;

    let mut plaintext = vec![0u8; parsed.ciphertext.len()];
    let len = match keys
        .decryptor()
        .decrypt_padded_b2b::<Pkcs7>(parsed.ciphertext, &mut plaintext)
    {
        Ok(unpadded) => unpadded.len(),
        Err(_) => {
            plaintext.zeroize();
            return Err(EnvelopeError::BadPadding);
        }
    };
    plaintext.truncate(len);
    Ok(Opened { header, plaintext })
}

/// An envelope split into its parts; nothing in it is verified.
struct Parsed<'a> {
    header: Header,
    /// Every byte before the tag.
    authenticated: &'a [u8],
    ciphertext: &'a [u8],
    tag: &'a [u8],
}

fn parse(bytes: &[u8]) -> Result<Parsed<'_>, EnvelopeError> {
    let mut r = Reader { bytes, pos: 0 };
    if r.u8()? != VERSION {
        return Err(EnvelopeError::UnsupportedVersion);
    }
    let direction = Direction::from_byte(r.u8()?).ok_or(EnvelopeError::BadDirection)?;
    let facility_len = usize::from(r.u8()?);
    if !(1..=MAX_FACILITY_LEN).contains(&facility_len) {
        return Err(EnvelopeError::BadFacility);
    }
    let facility = r.take(facility_len)?;
    check_facility(facility)?;
    let facility = facility.iter().map(|&b| char::from(b)).collect();
    let key_id = r.u32()?;
    let timestamp_ms = r.u64()?;
    let nonce = r.nonce()?;
    let reply_to = r.nonce()?;
    let c = usize::try_from(r.u32()?).map_err(|_| EnvelopeError::Malformed)?;
    if c == 0 || c % BLOCK_LEN != 0 {
        return Err(EnvelopeError::Malformed);
    }
    let ciphertext = r.take(c)?;
    let authenticated = &bytes[..r.pos];
    let tag = r.take(TAG_LEN)?;
    if r.pos != bytes.len() {
        return Err(EnvelopeError::Malformed);
    }
    Ok(Parsed {
        header: Header {
            version: VERSION,
            direction,
            facility,
            key_id,
            timestamp_ms,
            nonce,
            reply_to,
        },
        authenticated,
        ciphertext,
        tag,
    })
}

/// Reads big-endian fields; running out of bytes is [`EnvelopeError::Truncated`].
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EnvelopeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(EnvelopeError::Truncated)?;
        let taken = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], EnvelopeError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn u8(&mut self) -> Result<u8, EnvelopeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, EnvelopeError> {
        self.array().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, EnvelopeError> {
        self.array().map(u64::from_be_bytes)
    }

    fn nonce(&mut self) -> Result<Nonce, EnvelopeError> {
        self.array()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kat::{hex, to_hex};
    use cbc::cipher::block_padding::NoPadding;
    use proptest::prelude::*;

    const ZERO: Nonce = [0; NONCE_LEN];
    const NOW: u64 = 1_700_000_000_000;
    const MESSAGE: &[u8] = b"MSH|^~\\&|HNWEB|VIHA|RAIGT-PRSN-DMGR|BC00001013|20170125122125|train96|R03|20170125122125|D|2.4||\rZHD|20170125122125|^^00000010|HNAIADMINISTRATION||||2.4\rPID||1234567890^^^BC^PH\r";

    fn key(id: u32, fill: u8) -> MasterKey {
        MasterKey::new(id, [fill; 32])
    }

    fn sealed(plaintext: &[u8]) -> Vec<u8> {
        seal(
            &key(7, 0x42),
            "BC01000030",
            Direction::Request,
            &ZERO,
            NOW,
            plaintext,
        )
        .unwrap()
        .bytes
    }

    /// The vectors of `tests/data/envelope/kat.txt`.
    fn kat_vectors() -> Vec<std::collections::HashMap<String, String>> {
        crate::kat::blocks(include_str!("../../tests/data/envelope/kat.txt"))
    }

    fn nonce_from(hex_text: &str) -> Nonce {
        hex(hex_text).try_into().expect("16 bytes")
    }

    #[test]
    fn known_answers() {
        let vectors = kat_vectors();
        assert_eq!(vectors.len(), 2);
        for v in vectors {
            let master = MasterKey::new(
                v["key_id"].parse().unwrap(),
                hex(&v["master_key"]).try_into().unwrap(),
            );
            let direction = Direction::from_byte(v["direction"].parse().unwrap()).unwrap();
            let nonce = nonce_from(&v["nonce"]);
            let reply_to = nonce_from(&v["reply_to"]);
            let timestamp_ms = v["timestamp_ms"].parse().unwrap();
            let plaintext = hex(&v["plaintext"]);

            let keys = Keys::derive(&master, &nonce, direction);
            assert_eq!(to_hex(keys.tdes_key()), v["tdes_key"]);
            assert_eq!(to_hex(keys.iv()), v["iv"]);
            assert_eq!(to_hex(keys.mac_key()), v["mac_key"]);

            let sealed = seal_with_nonce(
                &master,
                &v["facility"],
                direction,
                &reply_to,
                timestamp_ms,
                &nonce,
                &plaintext,
            )
            .unwrap();
            assert_eq!(sealed.nonce, nonce);
            let expected = hex(&v["sealed"]);
            assert_eq!(to_hex(&sealed.bytes), v["sealed"]);
            // The ciphertext and the tag as cross-checked by openssl and Python.
            let ct = hex(&v["ciphertext"]);
            let tag_at = expected.len() - TAG_LEN;
            assert_eq!(&expected[tag_at - ct.len()..tag_at], &ct[..]);
            assert_eq!(to_hex(&expected[tag_at..]), v["tag"]);

            let header = read_header(&expected).unwrap();
            assert_eq!(
                header,
                Header {
                    version: 1,
                    direction,
                    facility: v["facility"].clone(),
                    key_id: master.id(),
                    timestamp_ms,
                    nonce,
                    reply_to,
                }
            );
            let opened = open(&master, &expected, direction).unwrap();
            assert_eq!(opened.header, header);
            assert_eq!(opened.plaintext, plaintext);
        }
    }

    #[test]
    fn round_trips_every_size_with_the_exact_length() {
        let master = key(7, 0x42);
        for size in [0, 1, 7, 8, 9, 1024, 64 * 1024, 1024 * 1024] {
            let plaintext: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            let s = seal(
                &master,
                "BC01000030",
                Direction::Response,
                &[9; NONCE_LEN],
                NOW,
                &plaintext,
            )
            .unwrap();
            let c = (size / 8 + 1) * 8;
            assert_eq!(s.bytes.len(), 83 + 10 + c, "size {size}");
            assert_eq!(
                s.bytes.capacity(),
                s.bytes.len(),
                "size {size}: one allocation"
            );
            let opened = open(&master, &s.bytes, Direction::Response).unwrap();
            assert_eq!(opened.plaintext, plaintext, "size {size}");
            assert_eq!(opened.header.nonce, s.nonce);
            assert_eq!(opened.header.reply_to, [9; NONCE_LEN]);
            assert_eq!(opened.header.timestamp_ms, NOW);
        }
    }

    #[test]
    fn two_seals_of_the_same_message_differ() {
        let a = seal(&key(7, 1), "F", Direction::Request, &ZERO, NOW, MESSAGE).unwrap();
        let b = seal(&key(7, 1), "F", Direction::Request, &ZERO, NOW, MESSAGE).unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.bytes, b.bytes);
        let header_len = FIXED_HEADER_LEN + 1 + 4;
        assert_ne!(a.bytes[header_len..], b.bytes[header_len..]);
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let master = key(7, 0x42);
        let good = sealed(MESSAGE);
        let facility_end = 3 + "BC01000030".len();
        let key_id = facility_end..facility_end + 4;
        let c_field = facility_end + 4 + 8 + 32..facility_end + 4 + 8 + 32 + 4;
        for pos in 0..good.len() {
            for mask in [0x01, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[pos] ^= mask;
                let err = open(&master, &bad, Direction::Request).unwrap_err();
                if key_id.contains(&pos) {
                    assert_eq!(err, EnvelopeError::KeyMismatch, "byte {pos}");
                } else if pos >= c_field.end || (facility_end + 4..c_field.start).contains(&pos) {
                    // timestamp, nonce, reply_to, ciphertext, tag
                    assert_eq!(err, EnvelopeError::BadMac, "byte {pos} ^ {mask:#x}");
                }
            }
        }
        assert!(open(&master, &good, Direction::Request).is_ok());
    }

    #[test]
    fn every_truncation_and_any_extension_is_refused() {
        let master = key(7, 0x42);
        let good = sealed(MESSAGE);
        for len in 0..good.len() {
            assert_eq!(
                open(&master, &good[..len], Direction::Request).unwrap_err(),
                EnvelopeError::Truncated,
                "length {len}"
            );
            assert_eq!(
                read_header(&good[..len]).unwrap_err(),
                EnvelopeError::Truncated
            );
        }
        for extra in [0u8, 1, 0xff] {
            let mut long = good.clone();
            long.push(extra);
            assert_eq!(
                open(&master, &long, Direction::Request).unwrap_err(),
                EnvelopeError::Malformed
            );
        }
    }

    #[test]
    fn structural_errors_are_named() {
        let good = sealed(b"x");
        let mut bad = good.clone();
        bad[0] = 2;
        assert_eq!(read_header(&bad), Err(EnvelopeError::UnsupportedVersion));
        for direction in [0, 3, 0xff] {
            let mut bad = good.clone();
            bad[1] = direction;
            assert_eq!(read_header(&bad), Err(EnvelopeError::BadDirection));
        }
        for len in [0, 33, 0xff] {
            let mut bad = good.clone();
            bad[2] = len;
            assert_eq!(read_header(&bad), Err(EnvelopeError::BadFacility));
        }
        for byte in [0, b'\r', 0x7f, 0x80, 0xe9] {
            let mut bad = good.clone();
            bad[4] = byte;
            assert_eq!(read_header(&bad), Err(EnvelopeError::BadFacility));
        }
        let c_at = 3 + 10 + 4 + 8 + 32;
        assert_eq!(good[c_at..c_at + 4], 8u32.to_be_bytes());
        for c in [0u32, 7, 9, 12] {
            let mut bad = good.clone();
            bad[c_at..c_at + 4].copy_from_slice(&c.to_be_bytes());
            let err = read_header(&bad).unwrap_err();
            assert!(
                matches!(err, EnvelopeError::Malformed | EnvelopeError::Truncated),
                "c = {c}: {err:?}"
            );
            if c % 8 != 0 || c == 0 {
                assert_eq!(err, EnvelopeError::Malformed, "c = {c}");
            }
        }
    }

    #[test]
    fn the_wrong_key_or_direction_is_refused() {
        let good = sealed(MESSAGE);
        assert_eq!(
            open(&key(7, 0x43), &good, Direction::Request).unwrap_err(),
            EnvelopeError::BadMac
        );
        assert_eq!(
            open(&key(8, 0x42), &good, Direction::Request).unwrap_err(),
            EnvelopeError::KeyMismatch
        );
        assert_eq!(
            open(&key(7, 0x42), &good, Direction::Response).unwrap_err(),
            EnvelopeError::WrongDirection
        );
        // Rewriting the direction byte is caught by the tag (and the key derivation).
        let mut turned = good.clone();
        turned[1] = Direction::Response.as_byte();
        assert_eq!(
            open(&key(7, 0x42), &turned, Direction::Response).unwrap_err(),
            EnvelopeError::BadMac
        );
    }

    /// An envelope with a valid tag over a ciphertext of `blocks` encrypted without
    /// padding.
    fn sealed_raw_blocks(master: &MasterKey, blocks: &[u8]) -> Vec<u8> {
        let nonce = [5; NONCE_LEN];
        let mut bytes = seal_with_nonce(
            master,
            "F",
            Direction::Request,
            &ZERO,
            NOW,
            &nonce,
            &vec![0; blocks.len() - 1],
        )
        .unwrap()
        .bytes;
        let keys = Keys::derive(master, &nonce, Direction::Request);
        let tag_at = bytes.len() - TAG_LEN;
        let start = tag_at - blocks.len();
        keys.encryptor()
            .encrypt_padded_b2b::<NoPadding>(blocks, &mut bytes[start..tag_at])
            .unwrap();
        let mut mac = keys.mac();
        mac.update(&bytes[..tag_at]);
        bytes[tag_at..].copy_from_slice(&mac.finalize().into_bytes());
        bytes
    }

    #[test]
    fn bad_padding_behind_a_good_tag_is_bad_padding() {
        let master = key(7, 0x42);
        let valid = sealed_raw_blocks(&master, b"abcdefg\x01");
        assert_eq!(
            open(&master, &valid, Direction::Request).unwrap().plaintext,
            b"abcdefg"
        );
        for last in [*b"abcdefg\x00", *b"abcdefg\x09", *b"abcdef\x01\x02"] {
            let bytes = sealed_raw_blocks(&master, &last);
            assert_eq!(
                open(&master, &bytes, Direction::Request).unwrap_err(),
                EnvelopeError::BadPadding
            );
            // The tag is checked first: the same padding behind a bad tag is BadMac.
            let mut forged = bytes.clone();
            *forged.last_mut().unwrap() ^= 1;
            assert_eq!(
                open(&master, &forged, Direction::Request).unwrap_err(),
                EnvelopeError::BadMac
            );
        }
    }

    #[test]
    fn bad_facilities_are_refused_when_sealing() {
        let master = key(7, 0x42);
        let too_long = "F".repeat(33);
        for facility in ["", too_long.as_str(), "BC\u{e9}", "A\rB", "A\0"] {
            assert_eq!(
                seal(&master, facility, Direction::Request, &ZERO, NOW, b"x").unwrap_err(),
                EnvelopeError::BadFacility,
                "{facility:?}"
            );
        }
        let longest = "F".repeat(32);
        for facility in ["F", "BC 01", longest.as_str()] {
            let s = seal(&master, facility, Direction::Request, &ZERO, NOW, b"x").unwrap();
            assert_eq!(read_header(&s.bytes).unwrap().facility, facility);
        }
    }

    #[test]
    fn lengths_beyond_the_u32_field_are_too_large() {
        assert_eq!(ciphertext_len(0), Some(8));
        assert_eq!(ciphertext_len(7), Some(8));
        assert_eq!(ciphertext_len(8), Some(16));
        assert_eq!(
            ciphertext_len(u32::MAX as usize - 8),
            Some(u32::MAX as usize - 7)
        );
        assert_eq!(ciphertext_len(u32::MAX as usize - 7), None);
        assert_eq!(ciphertext_len(usize::MAX), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_message_round_trips(
            plaintext in proptest::collection::vec(any::<u8>(), 0..2048),
            facility in "[ -~]{1,32}",
            id in any::<u32>(),
            response in any::<bool>(),
            reply_to in any::<[u8; 16]>(),
            timestamp_ms in any::<u64>(),
        ) {
            let master = MasterKey::new(id, [0x5a; 32]);
            let direction = if response { Direction::Response } else { Direction::Request };
            let s = seal(&master, &facility, direction, &reply_to, timestamp_ms, &plaintext)
                .unwrap();
            let opened = open(&master, &s.bytes, direction).unwrap();
            prop_assert_eq!(&opened.plaintext, &plaintext);
            prop_assert_eq!(opened.header, Header {
                version: 1,
                direction,
                facility,
                key_id: id,
                timestamp_ms,
                nonce: s.nonce,
                reply_to,
            });
        }
    }
}
