//! The separators of one message, read from its MSH-1 and MSH-2 (Volume 5, 2.3.1).

/// The delimiters a message declares in MSH-1 (field separator) and MSH-2 (encoding
/// characters, in the order component, repetition, escape, subcomponent).
///
/// HL7 lets a sender omit the escape and subcomponent characters when it uses neither,
/// so those two are optional here. [`Delimiters::complete`] fills them in for writing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Delimiters {
    /// Separates fields (MSH-1), usually `|`.
    pub field: u8,
    /// Separates components, usually `^`.
    pub component: u8,
    /// Separates repetitions of a field, usually `~`.
    pub repetition: u8,
    /// Starts and ends an escape sequence, usually `\`.
    pub escape: Option<u8>,
    /// Separates subcomponents, usually `&`.
    pub subcomponent: Option<u8>,
}

impl Default for Delimiters {
    /// The delimiters HL7 recommends: `|^~\&`.
    fn default() -> Self {
        Self::STANDARD
    }
}

/// Why MSH-1 or MSH-2 does not declare usable delimiters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DelimiterError {
    /// A delimiter is a letter, a digit, a space, a control character, not ASCII, or the
    /// double quote (which HL7 reserves for null values, `""`).
    NotPunctuation,
    /// The same character is declared for two roles.
    Repeated,
    /// MSH-2 holds fewer than two or more than five characters.
    BadLength,
}

impl std::fmt::Display for DelimiterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NotPunctuation => {
                "a delimiter must be a printable ASCII punctuation character other than the double quote"
            }
            Self::Repeated => "the same character is declared for two delimiters",
            Self::BadLength => "the encoding characters (MSH-2) must be 2 to 5 characters long",
        })
    }
}

impl std::error::Error for DelimiterError {}

impl Delimiters {
    /// `|^~\&`, the values HL7 recommends and every healthnetBC example uses.
    pub const STANDARD: Self = Self {
        field: b'|',
        component: b'^',
        repetition: b'~',
        escape: Some(b'\\'),
        subcomponent: Some(b'&'),
    };

    /// Reads the delimiters from the field separator and the encoding characters (MSH-2).
    ///
    /// MSH-2 must hold the component and repetition characters; the escape and
    /// subcomponent characters may be left out. A fifth character (the truncation
    /// character of HL7 v2.7) is accepted and ignored.
    pub fn from_msh(field: u8, encoding: &[u8]) -> Result<Self, DelimiterError> {
        if !(2..=5).contains(&encoding.len()) {
            return Err(DelimiterError::BadLength);
        }
        let declared = &encoding[..encoding.len().min(4)];
        if !is_delimiter_char(field) || !declared.iter().all(|&b| is_delimiter_char(b)) {
            return Err(DelimiterError::NotPunctuation);
        }
        for (i, &b) in declared.iter().enumerate() {
            if b == field || declared[i + 1..].contains(&b) {
                return Err(DelimiterError::Repeated);
            }
        }
        Ok(Self {
            field,
            component: declared[0],
            repetition: declared[1],
            escape: declared.get(2).copied(),
            subcomponent: declared.get(3).copied(),
        })
    }

    /// The same delimiters with an escape and a subcomponent character always present,
    /// as a writer needs them: a missing one becomes `\` or `&`, or, if that character is
    /// already taken, the first free one of `#$%*+` and so on.
    pub fn complete(self) -> Self {
        let mut out = self;
        let taken = |d: &Self, b: u8| {
            [
                Some(d.field),
                Some(d.component),
                Some(d.repetition),
                d.escape,
                d.subcomponent,
            ]
            .contains(&Some(b))
        };
        const SPARE: &[u8] = b"#$%*+!/:;=?@_`{}";
        if out.escape.is_none() {
            let pick = std::iter::once(b'\\')
                .chain(SPARE.iter().copied())
                .find(|&b| !taken(&out, b));
            out.escape = pick;
        }
        if out.subcomponent.is_none() {
            let pick = std::iter::once(b'&')
                .chain(SPARE.iter().copied())
                .find(|&b| !taken(&out, b));
            out.subcomponent = pick;
        }
        out
    }

    /// The encoding characters as MSH-2 writes them: component, repetition, then escape
    /// and subcomponent when present.
    pub fn encoding_characters(&self) -> Vec<u8> {
        if self.escape.is_none() && self.subcomponent.is_some() {
            // HL7 fixes the positions: a subcomponent character needs an escape before it.
            return self.complete().encoding_characters();
        }
        let mut out = vec![self.component, self.repetition];
        out.extend(self.escape);
        out.extend(self.subcomponent);
        out
    }

    /// True when `b` is one of the message's delimiters.
    #[inline]
    pub fn is_delimiter(&self, b: u8) -> bool {
        b == self.field
            || b == self.component
            || b == self.repetition
            || Some(b) == self.escape
            || Some(b) == self.subcomponent
    }
}

/// Printable ASCII that is neither a letter, a digit, a space nor `"` (`""` means null).
fn is_delimiter_char(b: u8) -> bool {
    b.is_ascii_punctuation() && b != b'"'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_from_msh() {
        assert_eq!(
            Delimiters::from_msh(b'|', b"^~\\&"),
            Ok(Delimiters::STANDARD)
        );
    }

    #[test]
    fn optional_escape_and_subcomponent() {
        let d = Delimiters::from_msh(b'|', b"^~").unwrap();
        assert_eq!(d.escape, None);
        assert_eq!(d.subcomponent, None);
        let c = d.complete();
        assert_eq!(c.escape, Some(b'\\'));
        assert_eq!(c.subcomponent, Some(b'&'));
    }

    #[test]
    fn truncation_character_is_ignored() {
        let d = Delimiters::from_msh(b'|', b"^~\\&#").unwrap();
        assert_eq!(d, Delimiters::STANDARD);
    }

    #[test]
    fn refuses_bad_delimiters() {
        assert_eq!(
            Delimiters::from_msh(b'|', b"^"),
            Err(DelimiterError::BadLength)
        );
        assert_eq!(
            Delimiters::from_msh(b'|', b"^~\\&#!"),
            Err(DelimiterError::BadLength)
        );
        assert_eq!(
            Delimiters::from_msh(b'|', b"^^\\&"),
            Err(DelimiterError::Repeated)
        );
        assert_eq!(
            Delimiters::from_msh(b'|', b"^|\\&"),
            Err(DelimiterError::Repeated)
        );
        assert_eq!(
            Delimiters::from_msh(b'A', b"^~\\&"),
            Err(DelimiterError::NotPunctuation)
        );
        assert_eq!(
            Delimiters::from_msh(b'|', b"^~ &"),
            Err(DelimiterError::NotPunctuation)
        );
        assert_eq!(
            Delimiters::from_msh(b'|', b"^~\r&"),
            Err(DelimiterError::NotPunctuation)
        );
        assert_eq!(
            Delimiters::from_msh(b'"', b"^~\\&"),
            Err(DelimiterError::NotPunctuation)
        );
    }

    #[test]
    fn complete_avoids_taken_characters() {
        // The sender chose `\` as its component separator and declared no escape.
        let d = Delimiters::from_msh(b'|', b"\\~").unwrap().complete();
        assert_eq!(d.escape, Some(b'#'));
        assert_eq!(d.subcomponent, Some(b'&'));
        assert_eq!(d.encoding_characters(), b"\\~#&");
    }

    #[test]
    fn other_characters_round_trip() {
        let d = Delimiters::from_msh(b'!', b"@#$%").unwrap();
        assert_eq!(d.encoding_characters(), b"@#$%");
        assert!(d.is_delimiter(b'!') && d.is_delimiter(b'%') && !d.is_delimiter(b'|'));
    }
}
