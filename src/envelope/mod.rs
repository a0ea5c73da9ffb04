//! The per-transaction envelope (DESIGN 3.5; Volume 5, 2.4.10: "each transaction is
//! encrypted using a unique triple DES key").
//!
//! Every facility shares a 256-bit master key with HNGard, made at registration and
//! identified by a key id. Each request and each response is sealed under keys derived
//! from it and a fresh random nonce. No I/O happens here.

use std::fmt;

use zeroize::Zeroizing;

/// A facility's 256-bit envelope master key and its key id. Zeroed when dropped; its
/// `Debug` form never shows the key.
#[derive(Clone)]
pub struct MasterKey {
    id: u32,
    bytes: Zeroizing<[u8; 32]>,
}

impl MasterKey {
    /// The key `bytes` with the id `id`.
    pub fn new(id: u32, bytes: [u8; 32]) -> Self {
        Self {
            id,
            bytes: Zeroizing::new(bytes),
        }
    }

    /// A new random key from the operating system's generator.
    pub fn generate(id: u32) -> Result<Self, getrandom::Error> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut())?;
        Ok(Self { id, bytes })
    }

    /// The key id, named in every envelope sealed with this key.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The key itself.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .field("bytes", &"MASKED")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_never_printed() {
        let a = MasterKey::generate(1).unwrap();
        let b = MasterKey::generate(1).unwrap();
        assert_ne!(a.as_bytes(), b.as_bytes());
        let shown = format!("{a:?}");
        assert!(
            shown.contains("MASKED") && shown.contains("id: 1"),
            "{shown}"
        );
        assert!(!shown.contains(&format!("{:?}", a.as_bytes())), "{shown}");
    }
}
