//! The HL7Xfer scramble: a running XOR that HNClient 4.1.d applies to every block after
//! the listener's greeting.
//!
//! ```text
//! scramble(b, seed):    s[0] = b[0] ^ seed,   s[i] = b[i] ^ s[i-1]
//! unscramble(s, seed):  b[0] = s[0] ^ seed,   b[i] = s[i] ^ s[i-1]
//! ```
//!
//! Both directions XOR with the previous *scrambled* byte, so writing `s[-1] = seed`
//! makes each scrambled byte the XOR of the seed and every plain byte up to it:
//! `s[i] = seed ^ b[0] ^ … ^ b[i]`. It hides nothing from anyone who has read this; it
//! is kept only because HNClient 4.1.d and the applications written for it expect it.
//!
//! Each block is scrambled "on its own": it starts again from the seed. [`Scrambler`] and
//! [`Unscrambler`] carry the previous scrambled byte across pieces of one block, so a
//! block that arrives in pieces is unscrambled in place as it comes, without a second copy.

/// Scrambles `block` in place, starting from `seed`.
///
/// ```
/// use hnapi::xfer::scramble::{scramble, unscramble};
///
/// let mut block = *b"DT";
/// scramble(&mut block, 0x08);
/// // 'D' 0x44 ^ 0x08 = 0x4C; 'T' 0x54 ^ 0x4C = 0x18
/// assert_eq!(block, [0x4C, 0x18]);
/// unscramble(&mut block, 0x08);
/// assert_eq!(&block, b"DT");
/// ```
pub fn scramble(block: &mut [u8], seed: u8) {
    Scrambler::new(seed).apply(block);
}

/// Unscrambles `block` in place: the inverse of [`scramble`] with the same `seed`.
pub fn unscramble(block: &mut [u8], seed: u8) {
    Unscrambler::new(seed).apply(block);
}

/// Scrambles one block that is written in pieces: the pieces, scrambled in order, equal
/// the whole block scrambled by [`scramble`].
#[derive(Clone, Copy, Debug)]
pub struct Scrambler {
    /// The last scrambled byte written, or the seed before the first.
    prev: u8,
}

impl Scrambler {
    /// A scrambler at the start of a block.
    pub fn new(seed: u8) -> Self {
        Self { prev: seed }
    }

    /// Scrambles the next piece of the block in place.
    pub fn apply(&mut self, piece: &mut [u8]) {
        let mut prev = self.prev;
        for b in piece.iter_mut() {
            *b ^= prev;
            prev = *b;
        }
        self.prev = prev;
    }
}

/// Unscrambles one block that arrives in pieces: the pieces, unscrambled in order, equal
/// the whole block unscrambled by [`unscramble`].
#[derive(Clone, Copy, Debug)]
pub struct Unscrambler {
    /// The last scrambled byte read, or the seed before the first.
    prev: u8,
}

impl Unscrambler {
    /// An unscrambler at the start of a block.
    pub fn new(seed: u8) -> Self {
        Self { prev: seed }
    }

    /// Unscrambles the next piece of the block in place.
    pub fn apply(&mut self, piece: &mut [u8]) {
        let mut prev = self.prev;
        for b in piece.iter_mut() {
            let scrambled = *b;
            *b ^= prev;
            prev = scrambled;
        }
        self.prev = prev;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_vectors_computed_by_hand() {
        // b = 01 02 03 04 05 06 07 08, seed 0:
        //   s0 = 01 ^ 00 = 01
        //   s1 = 02 ^ 01 = 03
        //   s2 = 03 ^ 03 = 00
        //   s3 = 04 ^ 00 = 04
        //   s4 = 05 ^ 04 = 01
        //   s5 = 06 ^ 01 = 07
        //   s6 = 07 ^ 07 = 00
        //   s7 = 08 ^ 00 = 08
        let mut b = [1u8, 2, 3, 4, 5, 6, 7, 8];
        scramble(&mut b, 0);
        assert_eq!(b, [0x01, 0x03, 0x00, 0x04, 0x01, 0x07, 0x00, 0x08]);
        unscramble(&mut b, 0);
        assert_eq!(b, [1, 2, 3, 4, 5, 6, 7, 8]);

        // "SI" with seed 0x08:
        //   s0 = 'S' 53 ^ 08 = 5B
        //   s1 = 'I' 49 ^ 5B = 12
        let mut b = *b"SI";
        scramble(&mut b, 0x08);
        assert_eq!(b, [0x5B, 0x12]);

        // FF 00 FF with seed AA:
        //   s0 = FF ^ AA = 55
        //   s1 = 00 ^ 55 = 55
        //   s2 = FF ^ 55 = AA
        let mut b = [0xFF, 0x00, 0xFF];
        scramble(&mut b, 0xAA);
        assert_eq!(b, [0x55, 0x55, 0xAA]);
        // Unscrambling XORs with the previous scrambled byte (not the plain one):
        //   b0 = 55 ^ AA = FF, b1 = 55 ^ 55 = 00, b2 = AA ^ 55 = FF
        unscramble(&mut b, 0xAA);
        assert_eq!(b, [0xFF, 0x00, 0xFF]);
    }

    #[test]
    fn known_answer_blocks() {
        // tests/data/kat/hl7xfer.txt, written by tests/data/kat/kat.py: all 256 byte values
        // with seed 5a, on little- and big-endian hosts alike (tools/cross.sh).
        let kat = crate::kat::all(include_str!("../../tests/data/kat/hl7xfer.txt"));
        let seed = crate::kat::hex(&kat["scramble_seed"])[0];
        let plain = crate::kat::hex(&kat["scramble_plain"]);
        assert_eq!(plain, (0..=255).collect::<Vec<u8>>());
        let mut block = plain.clone();
        scramble(&mut block, seed);
        assert_eq!(crate::kat::to_hex(&block), kat["scramble_scrambled"]);
        unscramble(&mut block, seed);
        assert_eq!(block, plain);
    }

    #[test]
    fn an_empty_block_is_left_alone() {
        let mut b: [u8; 0] = [];
        scramble(&mut b, 0x5A);
        unscramble(&mut b, 0x5A);
    }

    #[test]
    fn each_scrambled_byte_is_the_xor_of_the_seed_and_the_plain_bytes_so_far() {
        let plain = b"MSH|^~\\&|HR|BC00000098\r";
        let mut s = *plain;
        scramble(&mut s, 0x3C);
        let mut acc = 0x3C;
        for (i, p) in plain.iter().enumerate() {
            acc ^= p;
            assert_eq!(s[i], acc, "byte {i}");
        }
    }

    proptest! {
        #[test]
        fn unscramble_undoes_scramble(data in proptest::collection::vec(any::<u8>(), 0..512), seed in any::<u8>()) {
            let mut b = data.clone();
            scramble(&mut b, seed);
            unscramble(&mut b, seed);
            prop_assert_eq!(b, data);
        }

        #[test]
        fn pieces_equal_the_whole(data in proptest::collection::vec(any::<u8>(), 0..512), seed in any::<u8>(), cuts in proptest::collection::vec(0usize..512, 0..8)) {
            let mut whole = data.clone();
            scramble(&mut whole, seed);

            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut pieces = data.clone();
            let mut s = Scrambler::new(seed);
            let mut at = 0;
            for cut in cuts.into_iter().chain([data.len()]) {
                s.apply(&mut pieces[at..cut]);
                at = cut;
            }
            prop_assert_eq!(&pieces, &whole);

            let mut u = Unscrambler::new(seed);
            let mid = pieces.len() / 3;
            let (a, b) = pieces.split_at_mut(mid);
            u.apply(a);
            u.apply(b);
            prop_assert_eq!(pieces, data);
        }
    }
}
