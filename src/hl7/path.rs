//! Addresses of values inside a message, written as HL7 people write them.
//!
//! Every number counts from 1, as in HL7:
//!
//! | path            | means                                                        |
//! |-----------------|--------------------------------------------------------------|
//! | `MSH-10`        | field 10 of the first MSH segment                            |
//! | `ERR[3]-1.4.1`  | the third ERR segment, field 1, component 4, subcomponent 1   |
//! | `PID-5[2].1`    | PID-5, its second repetition, component 1                    |
//! | `PID-3`         | the whole field PID-3, every repetition, as written          |
//!
//! `MSH-1` is the field separator itself and `MSH-2` the encoding characters.

use std::fmt;
use std::str::FromStr;

/// The largest index a path accepts at any level; HL7 messages never come close.
pub const MAX_INDEX: u32 = 99_999;

/// The address of a field, repetition, component or subcomponent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Path {
    segment: [u8; 3],
    occurrence: u32,
    field: u32,
    repetition: Option<u32>,
    component: Option<u32>,
    subcomponent: Option<u32>,
}

/// Why a text is not a path. It names the place, never echoes message data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathError {
    /// The segment id is not three upper-case letters or digits (`pid-3` is refused,
    /// not read as `PID-3`: segment ids are upper case, and a path that silently matched
    /// nothing would print an empty value).
    BadSegmentId,
    /// There is no `-FIELD` after the segment.
    MissingField,
    /// An index is missing, is not a number, is 0, or is larger than [`MAX_INDEX`].
    BadIndex {
        /// Byte offset of the index in the path text.
        at: usize,
    },
    /// Something follows the path that is not part of the syntax.
    Unexpected {
        /// Byte offset of the first unexpected character.
        at: usize,
    },
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadSegmentId => {
                f.write_str(
                "a path starts with a three-character upper-case segment id; paths look like SEG[n]-F[r].C.S, e.g. PID-3 or ERR[3]-1.4.1",
            )
            }
            Self::MissingField => {
                f.write_str("a path needs a field number after the segment, such as PID-2")
            }
            Self::BadIndex { at } => {
                write!(
                    f,
                    "expected a number from 1 to {MAX_INDEX} at character {}",
                    at + 1
                )
            }
            Self::Unexpected { at } => write!(
                f,
                "unexpected character at {}; paths look like SEG[n]-F[r].C.S, e.g. ERR[3]-1.4.1",
                at + 1
            ),
        }
    }
}

impl std::error::Error for PathError {}

impl Path {
    /// Field `field` of the first segment `segment`, e.g. `Path::new(*b"MSH", 10)`.
    pub const fn new(segment: [u8; 3], field: u32) -> Self {
        Self {
            segment,
            occurrence: 1,
            field,
            repetition: None,
            component: None,
            subcomponent: None,
        }
    }

    /// The same path in the `n`-th segment with this id (`SEG[n]`).
    pub const fn with_occurrence(mut self, n: u32) -> Self {
        self.occurrence = n;
        self
    }

    /// The same path narrowed to repetition `r` of the field (`SEG-F[r]`).
    pub const fn with_repetition(mut self, r: u32) -> Self {
        self.repetition = Some(r);
        self
    }

    /// The same path narrowed to component `c` (`SEG-F.C`).
    pub const fn with_component(mut self, c: u32) -> Self {
        self.component = Some(c);
        self
    }

    /// The same path narrowed to subcomponent `s` of its component (`SEG-F.C.S`).
    ///
    /// A path with a subcomponent and no component addresses component 1.
    pub const fn with_subcomponent(mut self, s: u32) -> Self {
        if self.component.is_none() {
            self.component = Some(1);
        }
        self.subcomponent = Some(s);
        self
    }

    /// The segment id, e.g. `b"PID"`.
    pub fn segment(&self) -> &[u8; 3] {
        &self.segment
    }

    /// Which segment with that id, counting from 1.
    pub fn occurrence(&self) -> u32 {
        self.occurrence
    }

    /// The field number, counting from 1.
    pub fn field(&self) -> u32 {
        self.field
    }

    /// The repetition, when the path names one.
    pub fn repetition(&self) -> Option<u32> {
        self.repetition
    }

    /// The component, when the path names one.
    pub fn component(&self) -> Option<u32> {
        self.component
    }

    /// The subcomponent, when the path names one.
    pub fn subcomponent(&self) -> Option<u32> {
        self.subcomponent
    }
}

impl FromStr for Path {
    type Err = PathError;

    fn from_str(s: &str) -> Result<Self, PathError> {
        let b = s.as_bytes();
        if b.len() < 3
            || !b[..3]
                .iter()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        {
            return Err(PathError::BadSegmentId);
        }
        let segment = [b[0], b[1], b[2]];
        let mut cur = Cursor { b, at: 3 };
        let occurrence = cur.bracketed()?.unwrap_or(1);
        if cur.at == b.len() {
            return Err(PathError::MissingField);
        }
        cur.expect(b'-')?;
        let field = cur.number()?;
        let repetition = cur.bracketed()?;
        let mut component = None;
        let mut subcomponent = None;
        if cur.eat(b'.') {
            component = Some(cur.number()?);
            if cur.eat(b'.') {
                subcomponent = Some(cur.number()?);
            }
        }
        if cur.at != b.len() {
            return Err(PathError::Unexpected { at: cur.at });
        }
        Ok(Self {
            segment,
            occurrence,
            field,
            repetition,
            component,
            subcomponent,
        })
    }
}

struct Cursor<'s> {
    b: &'s [u8],
    at: usize,
}

impl Cursor<'_> {
    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.at) == Some(&c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), PathError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(PathError::Unexpected { at: self.at })
        }
    }

    fn number(&mut self) -> Result<u32, PathError> {
        let start = self.at;
        let digits = self.b[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        self.at += digits;
        std::str::from_utf8(&self.b[start..self.at])
            .ok()
            .filter(|_| digits <= 5)
            .and_then(|t| t.parse::<u32>().ok())
            .filter(|n| (1..=MAX_INDEX).contains(n))
            .ok_or(PathError::BadIndex { at: start })
    }

    fn bracketed(&mut self) -> Result<Option<u32>, PathError> {
        if !self.eat(b'[') {
            return Ok(None);
        }
        let n = self.number()?;
        self.expect(b']')?;
        Ok(Some(n))
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in &self.segment {
            fmt::Write::write_char(f, char::from(b))?;
        }
        if self.occurrence != 1 {
            write!(f, "[{}]", self.occurrence)?;
        }
        write!(f, "-{}", self.field)?;
        if let Some(r) = self.repetition {
            write!(f, "[{r}]")?;
        }
        if let Some(c) = self.component {
            write!(f, ".{c}")?;
        }
        if let Some(s) = self.subcomponent {
            write!(f, ".{s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Path {
        s.parse().unwrap()
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(p("MSH-10"), Path::new(*b"MSH", 10));
        assert_eq!(
            p("ERR[3]-1.4.1"),
            Path::new(*b"ERR", 1)
                .with_occurrence(3)
                .with_component(4)
                .with_subcomponent(1)
        );
        assert_eq!(
            p("PID-5[2].1"),
            Path::new(*b"PID", 5).with_repetition(2).with_component(1)
        );
        assert_eq!(p("PID-2.4"), Path::new(*b"PID", 2).with_component(4));
        assert_eq!(p("ZI1-12"), Path::new(*b"ZI1", 12));
    }

    #[test]
    fn displays_as_parsed() {
        for s in [
            "MSH-10",
            "ERR[3]-1.4.1",
            "PID-5[2].1",
            "PID-2.4",
            "PID-3[1]",
        ] {
            assert_eq!(p(s).to_string(), s);
        }
        // Occurrence 1 is the default and is not written.
        assert_eq!(p("PID[1]-2").to_string(), "PID-2");
    }

    #[test]
    fn refuses_malformed_paths() {
        assert_eq!("".parse::<Path>(), Err(PathError::BadSegmentId));
        assert_eq!("P-1".parse::<Path>(), Err(PathError::BadSegmentId));
        assert_eq!("pid-3".parse::<Path>(), Err(PathError::BadSegmentId));
        assert_eq!("Pid-3".parse::<Path>(), Err(PathError::BadSegmentId));
        assert_eq!("PID".parse::<Path>(), Err(PathError::MissingField));
        assert_eq!("PID-".parse::<Path>(), Err(PathError::BadIndex { at: 4 }));
        assert_eq!("PID-0".parse::<Path>(), Err(PathError::BadIndex { at: 4 }));
        assert_eq!("PID-2.".parse::<Path>(), Err(PathError::BadIndex { at: 6 }));
        assert_eq!(
            "PID-2x".parse::<Path>(),
            Err(PathError::Unexpected { at: 5 })
        );
        assert_eq!(
            "PID[2-2".parse::<Path>(),
            Err(PathError::Unexpected { at: 5 })
        );
        assert_eq!(
            "PID-2.1.1.1".parse::<Path>(),
            Err(PathError::Unexpected { at: 9 })
        );
        assert_eq!(
            "PID-100000".parse::<Path>(),
            Err(PathError::BadIndex { at: 4 })
        );
        assert_eq!(
            "PID-99999999999999999999".parse::<Path>(),
            Err(PathError::BadIndex { at: 4 })
        );
        assert_eq!(
            "PIDX-1".parse::<Path>(),
            Err(PathError::Unexpected { at: 3 })
        );
    }

    #[test]
    fn subcomponent_without_component_means_component_one() {
        assert_eq!(
            Path::new(*b"ERR", 1).with_subcomponent(2).to_string(),
            "ERR-1.1.2"
        );
    }
}
