//! Envelope master keys at rest: ChaCha20-Poly1305 under `storage.key`, a random 96-bit
//! nonce per key, and the facility id and key id as associated data, so that a sealed
//! key copied to another facility's row or key id no longer opens.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use zeroize::Zeroizing;

use super::GardError;
use super::store::SealedKey;
use crate::envelope::MasterKey;

/// Separates this use of `storage.key` from any later one.
const DOMAIN: &[u8] = b"hnsecure gard envelope key v1\0";

fn aad(facility: &str, key_id: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(DOMAIN.len() + facility.len() + 5);
    aad.extend_from_slice(DOMAIN);
    aad.extend_from_slice(facility.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&key_id.to_be_bytes());
    aad
}

fn cipher(storage_key: &[u8; 32]) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new(&(*storage_key).into())
}

/// Seals `key` of `facility` under `storage_key`.
pub(crate) fn seal(
    storage_key: &[u8; 32],
    facility: &str,
    key: &MasterKey,
) -> Result<SealedKey, GardError> {
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce)?;
    let aad = aad(facility, key.id());
    let ciphertext = cipher(storage_key)
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: key.as_bytes(),
                aad: &aad,
            },
        )
        // Encryption fails only for messages longer than ChaCha20 allows; 32 bytes is not.
        .map_err(|_| GardError::SealedKey {
            facility: facility.to_owned(),
            key_id: key.id(),
        })?;
    Ok(SealedKey { nonce, ciphertext })
}

/// Opens the sealed key `key_id` of `facility`.
pub(crate) fn unseal(
    storage_key: &[u8; 32],
    facility: &str,
    key_id: u32,
    sealed: &SealedKey,
) -> Result<MasterKey, GardError> {
    let fail = || GardError::SealedKey {
        facility: facility.to_owned(),
        key_id,
    };
    let aad = aad(facility, key_id);
    let plain = Zeroizing::new(
        cipher(storage_key)
            .decrypt(
                &Nonce::from(sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| fail())?,
    );
    let bytes: [u8; 32] = plain.as_slice().try_into().map_err(|_| fail())?;
    Ok(MasterKey::new(key_id, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gard_sealed_keys_open_only_for_their_facility_and_key_id() {
        let storage = [5u8; 32];
        let key = MasterKey::generate(3).unwrap();
        let sealed = seal(&storage, "BC1", &key).unwrap();
        assert_eq!(sealed.ciphertext.len(), 48);
        assert!(!sealed.ciphertext.windows(32).any(|w| w == key.as_bytes()));
        let opened = unseal(&storage, "BC1", 3, &sealed).unwrap();
        assert_eq!((opened.id(), opened.as_bytes()), (3, key.as_bytes()));

        assert!(unseal(&storage, "BC2", 3, &sealed).is_err());
        assert!(unseal(&storage, "BC1", 4, &sealed).is_err());
        assert!(unseal(&[6u8; 32], "BC1", 3, &sealed).is_err());
        let mut tampered = sealed.clone();
        tampered.ciphertext[0] ^= 1;
        let e = unseal(&storage, "BC1", 3, &tampered).err().unwrap();
        assert_eq!(
            e.to_string(),
            "envelope key 3 of facility BC1 does not decrypt with storage.key: \
             the database or the key file was changed"
        );
        // Two seals of one key differ (fresh nonces).
        assert_ne!(seal(&storage, "BC1", &key).unwrap(), sealed);
    }
}
