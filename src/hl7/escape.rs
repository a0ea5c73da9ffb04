//! Escape sequences in text values (Volume 5, 2.3.2).
//!
//! | sequence   | decodes to                                                   |
//! |------------|--------------------------------------------------------------|
//! | `\F\`      | the field separator                                          |
//! | `\S\`      | the component separator                                      |
//! | `\T\`      | the subcomponent separator                                   |
//! | `\R\`      | the repetition separator                                     |
//! | `\E\`      | the escape character                                         |
//! | `\Xhh..\`  | the bytes given by pairs of hexadecimal digits               |
//! | `\C\`      | a carriage return (a healthnetBC addition)                   |
//! | `\H\` `\N\` `\Z..\` | passed through unchanged, as is any sequence not above |
//!
//! [`encode`] is the inverse of [`decode`] for every byte string: delimiters become their
//! sequences, CR becomes `\C\`, LF becomes `\X0A\` (both would end a segment), and a value
//! that is exactly `""` is written `\X22\"` so that it is not read back as a null.

use std::borrow::Cow;

use super::Delimiters;

/// Decodes the escape sequences of one atomic value.
///
/// Returns the input itself, borrowed, when it holds no escape character.
pub fn decode<'a>(raw: &'a [u8], d: &Delimiters) -> Cow<'a, [u8]> {
    let Some(esc) = d.escape else {
        return Cow::Borrowed(raw);
    };
    let Some(first) = memchr::memchr(esc, raw) else {
        return Cow::Borrowed(raw);
    };
    let mut out = Vec::with_capacity(raw.len());
    out.extend_from_slice(&raw[..first]);
    let mut rest = &raw[first..];
    while let Some(open) = memchr::memchr(esc, rest) {
        out.extend_from_slice(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = memchr::memchr(esc, after) else {
            // An escape character with no closing one is data.
            out.extend_from_slice(&rest[open..]);
            return Cow::Owned(out);
        };
        let seq = &after[..close];
        if !decode_sequence(seq, d, &mut out) {
            out.push(esc);
            out.extend_from_slice(seq);
            out.push(esc);
        }
        rest = &after[close + 1..];
    }
    out.extend_from_slice(rest);
    Cow::Owned(out)
}

/// Appends what `seq` (the text between two escape characters) stands for, or returns
/// false when the sequence passes through unchanged.
fn decode_sequence(seq: &[u8], d: &Delimiters, out: &mut Vec<u8>) -> bool {
    let single = match seq {
        b"F" => Some(d.field),
        b"S" => Some(d.component),
        b"T" => d.subcomponent,
        b"R" => Some(d.repetition),
        b"E" => d.escape,
        b"C" => Some(b'\r'),
        _ => None,
    };
    if let Some(b) = single {
        out.push(b);
        return true;
    }
    match seq.split_first() {
        Some((b'X', hex)) if !hex.is_empty() && hex.len().is_multiple_of(2) => {
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return false;
            }
            out.extend(
                hex.chunks_exact(2)
                    .map(|pair| hex_value(pair[0]) << 4 | hex_value(pair[1])),
            );
            true
        }
        _ => false,
    }
}

fn hex_value(h: u8) -> u8 {
    match h {
        b'0'..=b'9' => h - b'0',
        b'a'..=b'f' => h - b'a' + 10,
        _ => h - b'A' + 10,
    }
}

/// Encodes one atomic value so that it can be written between delimiters.
///
/// Returns the input itself, borrowed, when nothing needs escaping.
/// `d` must have an escape character (use [`Delimiters::complete`]); without one the
/// value is returned unchanged.
pub fn encode<'a>(data: &'a [u8], d: &Delimiters) -> Cow<'a, [u8]> {
    if d.escape.is_none() || (!data.iter().any(|&b| needs_escape(b, d)) && data != b"\"\"") {
        return Cow::Borrowed(data);
    }
    let mut out = Vec::with_capacity(data.len() + 8);
    encode_into(data, d, &mut out);
    Cow::Owned(out)
}

/// Appends the encoded form of `data` to `out` (see [`encode`]).
pub fn encode_into(data: &[u8], d: &Delimiters, out: &mut Vec<u8>) {
    let Some(esc) = d.escape else {
        out.extend_from_slice(data);
        return;
    };
    let mut rest = data;
    if data == b"\"\"" {
        // A value of exactly two quotes would read back as "present but null".
        out.push(esc);
        out.extend_from_slice(b"X22");
        out.push(esc);
        rest = &data[1..];
    }
    let mut start = 0;
    for (i, &b) in rest.iter().enumerate() {
        if !needs_escape(b, d) {
            continue;
        }
        out.extend_from_slice(&rest[start..i]);
        start = i + 1;
        out.push(esc);
        match b {
            b'\r' => out.push(b'C'),
            b'\n' => out.extend_from_slice(b"X0A"),
            _ if b == d.field => out.push(b'F'),
            _ if b == d.component => out.push(b'S'),
            _ if b == d.repetition => out.push(b'R'),
            _ if Some(b) == d.subcomponent => out.push(b'T'),
            _ => out.push(b'E'),
        }
        out.push(esc);
    }
    out.extend_from_slice(&rest[start..]);
}

#[inline]
fn needs_escape(b: u8, d: &Delimiters) -> bool {
    b == b'\r' || b == b'\n' || d.is_delimiter(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Delimiters = Delimiters::STANDARD;

    fn dec(s: &str) -> Vec<u8> {
        decode(s.as_bytes(), &D).into_owned()
    }

    #[test]
    fn decodes_each_sequence() {
        assert_eq!(dec(r"A\F\B\S\C\T\D\R\E\E\F"), b"A|B^C&D~E\\F");
        assert_eq!(dec(r"X\X0D0A\Y"), b"X\r\nY");
        assert_eq!(dec(r"line\C\next"), b"line\rnext");
        assert_eq!(dec(r"\xff\"), b"\\xff\\", "lower-case x is not hex");
        assert_eq!(dec(r"\Xff\"), [0xff]);
    }

    #[test]
    fn volume5_display_example() {
        assert_eq!(
            dec(r" TOTAL CHOLESTEROL 180 \F\90 - 200\F\"),
            b" TOTAL CHOLESTEROL 180 |90 - 200|"
        );
        assert_eq!(dec(r"\S\-----\S\"), b"^-----^");
    }

    #[test]
    fn passes_other_sequences_through() {
        for s in [
            r"\H\bold\N\",
            r"\Zlocal\",
            r"\Q\",
            r"\X\",
            r"\X4\",
            r"\XZZ\",
            r"open\only",
            r"\\",
        ] {
            assert_eq!(dec(s), s.as_bytes(), "{s}");
        }
    }

    #[test]
    fn borrows_when_nothing_is_escaped() {
        assert!(matches!(decode(b"PLAIN TEXT", &D), Cow::Borrowed(_)));
        assert!(matches!(encode(b"PLAIN TEXT", &D), Cow::Borrowed(_)));
        let no_escape = Delimiters::from_msh(b'|', b"^~").unwrap();
        assert!(matches!(decode(br"\F\", &no_escape), Cow::Borrowed(_)));
    }

    #[test]
    fn encodes_delimiters_and_line_ends() {
        assert_eq!(&*encode(b"SMITH & WESSON", &D), br"SMITH \T\ WESSON");
        assert_eq!(
            &*encode(b"a|b^c~d\\e\rf\ng", &D),
            br"a\F\b\S\c\R\d\E\e\C\f\X0A\g"
        );
        assert_eq!(&*encode(b"\"\"", &D), br#"\X22\""#);
        assert_eq!(dec(r#"\X22\""#), b"\"\"");
    }

    #[test]
    fn uses_the_message_delimiters() {
        let d = Delimiters::from_msh(b'!', b"@#$%").unwrap();
        assert_eq!(&*decode(b"$F$$S$$T$$R$$E$", &d), b"!@%#$");
        assert_eq!(&*encode(b"!@%#$|", &d), b"$F$$S$$T$$R$$E$|");
    }
}
