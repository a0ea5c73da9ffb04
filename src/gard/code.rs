//! One-time registration codes: 80 random bits written as 16 characters of an
//! unambiguous alphabet in four groups (`K7QM-3XPD-9RTW-HC2N`), read back ignoring case,
//! dashes and spaces, and kept only as a hash.

use sha2::{Digest, Sha256};

/// 32 symbols, 5 bits each: digits and capitals without 0, 1, I and O, which people
/// confuse with each other.
const ALPHABET: &[u8; 32] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";

/// Characters in a code, without the dashes.
const LENGTH: usize = 16;

/// Separates the hash of a code from any other SHA-256 use.
const DOMAIN: &[u8] = b"hnsecure gard registration code v1\0";

/// A new random code as shown, e.g. `K7QM-3XPD-9RTW-HC2N` (80 bits), and its symbols.
pub(crate) fn generate() -> Result<(String, [u8; LENGTH]), getrandom::Error> {
    let mut random = [0u8; 10];
    getrandom::fill(&mut random)?;
    let mut bits = random
        .iter()
        .fold(0u128, |acc, &b| (acc << 8) | u128::from(b));
    let mut symbols = [0u8; LENGTH];
    for symbol in symbols.iter_mut().rev() {
        *symbol = ALPHABET[(bits & 31) as usize];
        bits >>= 5;
    }
    let mut code = String::with_capacity(LENGTH + 3);
    for (i, group) in symbols.chunks(4).enumerate() {
        if i > 0 {
            code.push('-');
        }
        code.extend(group.iter().map(|&b| char::from(b)));
    }
    Ok((code, symbols))
}

/// The 16 symbols of a code as typed (any case, with or without dashes or spaces), or
/// `None` when it cannot be a code.
pub(crate) fn normalise(typed: &str) -> Option<[u8; LENGTH]> {
    let mut symbols = [0u8; LENGTH];
    let mut n = 0;
    for b in typed.bytes().filter(|&b| b != b'-' && b != b' ') {
        let b = b.to_ascii_uppercase();
        if n == LENGTH || !ALPHABET.contains(&b) {
            return None;
        }
        symbols[n] = b;
        n += 1;
    }
    (n == LENGTH).then_some(symbols)
}

/// What is stored of a code: SHA-256 over a domain label, the facility id and the
/// normalised code. The facility id makes the same code hash differently per facility.
pub(crate) fn hash(facility: &str, symbols: &[u8; LENGTH]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(DOMAIN);
    hasher.update(facility.as_bytes());
    hasher.update([0]);
    hasher.update(symbols);
    hasher.finalize().into()
}

/// Compares two hashes in time independent of where they differ.
pub(crate) fn same_hash(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gard_codes_have_four_groups_of_unambiguous_symbols() {
        let (code, symbols) = generate().unwrap();
        assert_eq!(normalise(&code), Some(symbols));
        assert_eq!(code.len(), 19, "{code}");
        let groups: Vec<&str> = code.split('-').collect();
        assert_eq!(groups.len(), 4, "{code}");
        for group in groups {
            assert_eq!(group.len(), 4);
            assert!(group.bytes().all(|b| ALPHABET.contains(&b)), "{code}");
            assert!(!group.contains(['0', '1', 'I', 'O']), "{code}");
        }
        assert_ne!(generate().unwrap().0, code);
    }

    #[test]
    fn gard_codes_use_every_symbol() {
        // 80 bits over 16 symbols: every symbol of the alphabet shows up eventually,
        // so no bit is lost or fixed.
        let mut seen = [false; 32];
        for _ in 0..200 {
            for b in generate().unwrap().1 {
                seen[ALPHABET.iter().position(|&a| a == b).unwrap()] = true;
            }
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn gard_codes_are_read_ignoring_case_dashes_and_spaces() {
        let code = "K7QM-3XPD-9RTW-HC2N";
        let symbols = normalise(code).unwrap();
        assert_eq!(&symbols, b"K7QM3XPD9RTWHC2N");
        assert_eq!(normalise("k7qm3xpd9rtwhc2n"), Some(symbols));
        assert_eq!(normalise(" K7QM 3XPD-9rtw-HC2N "), Some(symbols));
        assert_eq!(normalise("K7QM-3XPD-9RTW-HC2"), None);
        assert_eq!(normalise("K7QM-3XPD-9RTW-HC2NN"), None);
        assert_eq!(normalise("K7QM-3XPD-9RTW-HC2O"), None);
        assert_eq!(normalise("K7QM-3XPD-9RTW-HC2\u{e9}"), None);
        assert_eq!(normalise(""), None);
    }

    #[test]
    fn gard_code_hashes_depend_on_the_facility() {
        let symbols = normalise("K7QM-3XPD-9RTW-HC2N").unwrap();
        let a = hash("BC00000098", &symbols);
        assert!(same_hash(&a, &hash("BC00000098", &symbols)));
        assert!(!same_hash(&a, &hash("BC00000099", &symbols)));
        let other = normalise("K7QM-3XPD-9RTW-HC2P").unwrap();
        assert!(!same_hash(&a, &hash("BC00000098", &other)));
    }
}
