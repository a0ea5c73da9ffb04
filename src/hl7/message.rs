//! The zero-copy parser: a [`Message`] borrows its input and keeps only offsets.
//!
//! Parsing makes one pass over the bytes and records where every segment starts and
//! ends and where every field separator is, so reaching any field afterwards costs no
//! search. Repetitions, components and subcomponents are found within their field when
//! asked for. Segments may end with CR, LF or CRLF; empty lines are skipped.

use std::borrow::Cow;
use std::fmt;

use super::codes::NetworkCode;
use super::delimiters::{DelimiterError, Delimiters};
use super::escape;
use super::path::Path;

/// One HL7 v2 message, parsed in place.
#[derive(Clone, Debug)]
pub struct Message<'a> {
    input: &'a [u8],
    delimiters: Delimiters,
    segments: Vec<SegmentIndex>,
    /// Offsets of every field separator, segment after segment.
    separators: Vec<u32>,
}

#[derive(Clone, Copy, Debug)]
struct SegmentIndex {
    start: u32,
    end: u32,
    first_separator: u32,
    separator_count: u32,
    /// MSH, BHS or FHS: field 1 is the separator itself, so field n ends at separator n-1.
    header: bool,
}

/// Why bytes are not an HL7 message. Carries positions, never message text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// The input is empty or only white space.
    Empty,
    /// The input does not start with an MSH segment.
    NoHeader {
        /// Byte offset where MSH was expected.
        offset: usize,
    },
    /// The MSH segment ends before it declares its delimiters.
    ShortHeader {
        /// Byte offset of the MSH segment.
        offset: usize,
    },
    /// MSH-1 or MSH-2 does not declare usable delimiters.
    BadDelimiters {
        /// Byte offset of the MSH segment.
        offset: usize,
        /// What is wrong with them.
        reason: DelimiterError,
    },
    /// The input is larger than 4 GiB, beyond what offsets can address.
    TooLarge,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("no HL7 message: the input is empty"),
            Self::NoHeader { offset } => {
                write!(
                    f,
                    "the message does not start with an MSH segment (byte {offset})"
                )
            }
            Self::ShortHeader { offset } => {
                write!(
                    f,
                    "the MSH segment at byte {offset} ends before its delimiters"
                )
            }
            Self::BadDelimiters { offset, reason } => {
                write!(
                    f,
                    "the MSH segment at byte {offset} declares unusable delimiters: {reason}"
                )
            }
            Self::TooLarge => f.write_str("the message is larger than 4 GiB"),
        }
    }
}

impl std::error::Error for ParseError {}

impl ParseError {
    /// The network code an answer to an unreadable request carries: `VLDT004E` for no
    /// message, `VLDT007E` for no MSH, `HNPS002E` for an MSH that cannot be read.
    pub fn network_code(&self) -> NetworkCode {
        match self {
            Self::Empty => NetworkCode::Vldt004E,
            Self::NoHeader { .. } => NetworkCode::Vldt007E,
            Self::ShortHeader { .. } | Self::BadDelimiters { .. } | Self::TooLarge => {
                NetworkCode::Hnps002E
            }
        }
    }
}

/// A value read from a message: not present (`||`), present but null (`|""|`), or data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    /// Nothing was sent for this element (Volume 5, 2.3.4: "ignore the field").
    NotPresent,
    /// `""` was sent: the receiver resets its value (Volume 5, 2.3.4).
    Null,
    /// The value. Escape sequences are decoded when the element is atomic; an element
    /// that still has repetitions, components or subcomponents inside is returned as written.
    Data(Cow<'a, [u8]>),
}

impl<'a> Value<'a> {
    /// True for [`Value::Null`] and [`Value::Data`].
    pub fn is_present(&self) -> bool {
        !matches!(self, Self::NotPresent)
    }

    /// The data, or `None` when not present or null.
    pub fn data(&self) -> Option<&[u8]> {
        match self {
            Self::Data(d) => Some(d),
            _ => None,
        }
    }

    /// The data as text (invalid UTF-8 replaced), or `""` when not present or null.
    pub fn text(&self) -> Cow<'_, str> {
        self.data()
            .map_or(Cow::Borrowed(""), String::from_utf8_lossy)
    }
}

impl<'a> Message<'a> {
    /// Parses one message. Leading white space (and a UTF-8 byte-order mark) is skipped;
    /// the message must then start with `MSH` and its delimiters.
    pub fn parse(input: &'a [u8]) -> Result<Self, ParseError> {
        if u32::try_from(input.len()).is_err() {
            return Err(ParseError::TooLarge);
        }
        let start = skip_leading_space(input);
        if start == input.len() {
            return Err(ParseError::Empty);
        }
        let head = &input[start..];
        if !head.starts_with(b"MSH") {
            return Err(ParseError::NoHeader { offset: start });
        }
        let field = match head.get(3) {
            Some(&b) if b != b'\r' && b != b'\n' => b,
            _ => return Err(ParseError::ShortHeader { offset: start }),
        };
        let encoding = &head[4..];
        let encoding =
            &encoding[..memchr::memchr3(field, b'\r', b'\n', encoding).unwrap_or(encoding.len())];
        let delimiters =
            Delimiters::from_msh(field, encoding).map_err(|reason| ParseError::BadDelimiters {
                offset: start,
                reason,
            })?;

        let mut msg = Message {
            input,
            delimiters,
            segments: Vec::with_capacity(input.len() / 64 + 2),
            separators: Vec::with_capacity(input.len() / 8 + 8),
        };
        msg.index(start);
        Ok(msg)
    }

    fn index(&mut self, start: usize) {
        let fs = self.delimiters.field;
        let mut seg_start = start;
        // The whole index is built in one pass over the bytes.
        for at in memchr::memchr3_iter(fs, b'\r', b'\n', &self.input[start..]) {
            let at = at + start;
            if self.input[at] == fs {
                self.separators.push(at as u32);
            } else {
                self.end_segment(seg_start, at);
                seg_start = at + 1;
            }
        }
        self.end_segment(seg_start, self.input.len());
    }

    fn end_segment(&mut self, start: usize, end: usize) {
        let first = self
            .segments
            .last()
            .map_or(0, |s| s.first_separator + s.separator_count);
        let count = self.separators.len() as u32 - first;
        let bytes = &self.input[start..end];
        if count == 0 && bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return; // an empty line, or trailing white space
        }
        let header = count > 0
            && self.separators[first as usize] as usize == start + 3
            && matches!(&bytes[..3], b"MSH" | b"BHS" | b"FHS");
        self.segments.push(SegmentIndex {
            start: start as u32,
            end: end as u32,
            first_separator: first,
            separator_count: count,
            header,
        });
    }

    /// The bytes this message was parsed from, exactly as given.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.input
    }

    /// The delimiters declared in MSH-1 and MSH-2.
    pub fn delimiters(&self) -> &Delimiters {
        &self.delimiters
    }

    /// The number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Every segment in order.
    pub fn segments(&self) -> impl ExactSizeIterator<Item = Segment<'_, 'a>> + '_ {
        self.segments
            .iter()
            .map(move |index| Segment { msg: self, index })
    }

    /// The `occurrence`-th segment (from 1) with the id `id`.
    pub fn segment(&self, id: &[u8], occurrence: u32) -> Option<Segment<'_, 'a>> {
        let nth = usize::try_from(occurrence.checked_sub(1)?).ok()?;
        self.segments().filter(|s| s.id() == id).nth(nth)
    }

    /// The bytes at `path` as written (escapes not decoded), or `None` when not present.
    ///
    /// A path without a repetition or component (`PID-3`) gives the whole field with all
    /// its repetitions; `PID-3.1` means the first repetition's first component.
    pub fn raw(&self, path: &Path) -> Option<&'a [u8]> {
        let segment = self.segment(path.segment(), path.occurrence())?;
        let field = segment.field(path.field());
        let value = if segment.index.header && path.field() <= 2 {
            // MSH-1 and MSH-2 are atomic: the delimiters themselves.
            let whole = [path.repetition(), path.component(), path.subcomponent()]
                .iter()
                .all(|i| i.is_none_or(|n| n == 1));
            whole.then_some(field)?
        } else {
            narrow(field, path, &self.delimiters)?
        };
        (!value.is_empty()).then_some(value)
    }

    /// The value at `path`: not present, present but null (`""`), or its data with
    /// escape sequences decoded (see [`Value::Data`]).
    pub fn value(&self, path: &Path) -> Value<'a> {
        match self.raw(path) {
            None => Value::NotPresent,
            Some(b"\"\"") => Value::Null,
            Some(raw) if self.is_atomic(path, raw) => {
                Value::Data(escape::decode(raw, &self.delimiters))
            }
            Some(raw) => Value::Data(Cow::Borrowed(raw)),
        }
    }

    /// A field of the first MSH segment, e.g. `msg.msh(10)` for the control id.
    pub fn msh(&self, field: u32) -> Value<'a> {
        self.value(&Path::new(*b"MSH", field))
    }

    /// True when `raw`, the element at `path`, has no structure below it.
    fn is_atomic(&self, path: &Path, raw: &[u8]) -> bool {
        let d = &self.delimiters;
        if path.field() <= 2 && path.segment() == b"MSH" {
            return false; // the delimiters are data, not escapes
        }
        let inner: &[Option<u8>] = if path.subcomponent().is_some() {
            &[]
        } else if path.component().is_some() {
            &[d.subcomponent]
        } else if path.repetition().is_some() {
            &[Some(d.component), d.subcomponent]
        } else {
            &[Some(d.repetition), Some(d.component), d.subcomponent]
        };
        !raw.iter().any(|b| inner.contains(&Some(*b)))
    }
}

/// Narrows a field to the repetition, component and subcomponent named by `path`.
fn narrow<'a>(field: &'a [u8], path: &Path, d: &Delimiters) -> Option<&'a [u8]> {
    let mut v = field;
    if path.repetition().is_some() || path.component().is_some() {
        v = nth_part(v, d.repetition, path.repetition().unwrap_or(1))?;
    }
    if let Some(c) = path.component() {
        v = nth_part(v, d.component, c)?;
    }
    if let Some(s) = path.subcomponent() {
        v = match d.subcomponent {
            Some(sep) => nth_part(v, sep, s)?,
            None if s == 1 => v,
            None => return None,
        };
    }
    Some(v)
}

/// The `n`-th (from 1) piece of `bytes` split at `sep`, or `None` when there are fewer.
pub(crate) fn nth_part(bytes: &[u8], sep: u8, n: u32) -> Option<&[u8]> {
    let mut start = 0;
    let mut index = 1;
    for at in memchr::memchr_iter(sep, bytes) {
        if index == n {
            return Some(&bytes[start..at]);
        }
        index += 1;
        start = at + 1;
    }
    (index == n).then(|| &bytes[start..])
}

fn skip_leading_space(input: &[u8]) -> usize {
    let after_bom = if input.starts_with(b"\xEF\xBB\xBF") {
        3
    } else {
        0
    };
    after_bom
        + input[after_bom..]
            .iter()
            .take_while(|b| b.is_ascii_whitespace())
            .count()
}

/// One segment of a parsed [`Message`].
#[derive(Clone, Copy, Debug)]
pub struct Segment<'m, 'a> {
    msg: &'m Message<'a>,
    index: &'m SegmentIndex,
}

impl<'m, 'a> Segment<'m, 'a> {
    /// The segment id, e.g. `b"PID"`: the bytes before the first field separator.
    pub fn id(&self) -> &'a [u8] {
        let end = if self.index.separator_count > 0 {
            self.msg.separators[self.index.first_separator as usize] as usize
        } else {
            self.index.end as usize
        };
        &self.msg.input[self.index.start as usize..end]
    }

    /// The segment as written, without its terminator.
    pub fn as_bytes(&self) -> &'a [u8] {
        &self.msg.input[self.index.start as usize..self.index.end as usize]
    }

    /// The number of the last field written (trailing empty fields included).
    pub fn field_count(&self) -> u32 {
        self.index.separator_count + u32::from(self.index.header)
    }

    /// Field `n` (from 1) as written; empty when not present or `n` is past the end.
    pub fn field(&self, n: u32) -> &'a [u8] {
        let s = self.index;
        let input = self.msg.input;
        if n == 0 {
            return &[];
        }
        if s.header && n == 1 {
            let at = self.msg.separators[s.first_separator as usize] as usize;
            return &input[at..at + 1];
        }
        let k = n - 1 - u32::from(s.header);
        if k >= s.separator_count {
            return &[];
        }
        let seps = &self.msg.separators[s.first_separator as usize..][..s.separator_count as usize];
        let from = seps[k as usize] as usize + 1;
        let to = seps
            .get(k as usize + 1)
            .map_or(s.end as usize, |&e| e as usize);
        &input[from..to]
    }

    /// Every field with its number, as written, from field 1 to [`Segment::field_count`].
    pub fn fields(&self) -> impl Iterator<Item = (u32, &'a [u8])> + use<'a, 'm> {
        let this = *self;
        (1..=self.field_count()).map(move |n| (n, this.field(n)))
    }

    /// True for MSH, BHS and FHS, whose field 1 is the field separator itself.
    pub fn is_header(&self) -> bool {
        self.index.header
    }
}

/// Splits a stream of messages (a file, a batch) at each MSH segment.
///
/// Each part starts with `MSH` and runs to the next MSH or the end, its segment
/// terminators included. Batch and file envelope segments (FHS, BHS, BTS, FTS) are left
/// out, and so is anything before the first MSH.
pub fn split_messages(input: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut current: Option<usize> = None;
    let mut line_start = 0;
    while line_start < input.len() {
        let line_end = memchr::memchr2(b'\r', b'\n', &input[line_start..])
            .map_or(input.len(), |e| line_start + e);
        let line = &input[line_start..line_end];
        let is_msh = line.starts_with(b"MSH") || line.starts_with(b"\xEF\xBB\xBFMSH");
        let is_envelope = [b"FHS", b"BHS", b"BTS", b"FTS"]
            .iter()
            .any(|id| line.starts_with(*id));
        if is_msh || is_envelope {
            if let Some(from) = current.take() {
                parts.push(&input[from..line_start]);
            }
            if is_msh {
                current = Some(line_start);
            }
        }
        line_start = line_end + 1;
    }
    if let Some(from) = current {
        parts.push(&input[from..]);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> Path {
        s.parse().unwrap()
    }

    const ADT: &[u8] =
        b"MSH|^~\\&|ADT1|NF20|RAIRCRD-NW-PRSN|BC0003000|19990531144853|Train96|R02|19980915000020|D|2.3\r\
PID||9865821574^^^BC^PH^MOH~123^^^BC^XX|\"\"|A\\T\\B&C^D\r\
ERR|^^^E1&ONE\r\
ERR|^^^E2&TWO\r\
ERR|^^^E3&THREE\r";

    #[test]
    fn reads_fields_repetitions_components_subcomponents() {
        let m = Message::parse(ADT).unwrap();
        assert_eq!(m.segment_count(), 5);
        assert_eq!(m.msh(10).text(), "19980915000020");
        assert_eq!(m.msh(1).data(), Some(&b"|"[..]));
        assert_eq!(m.msh(2).data(), Some(&b"^~\\&"[..]));
        assert_eq!(m.value(&path("MSH-9")).text(), "R02");
        assert_eq!(m.value(&path("PID-2.1")).text(), "9865821574");
        assert_eq!(m.value(&path("PID-2[2].1")).text(), "123");
        assert_eq!(m.value(&path("PID-2[2].5")).text(), "XX");
        assert_eq!(m.value(&path("PID-2[3].1")), Value::NotPresent);
        assert_eq!(m.value(&path("PID-2.4")).text(), "BC");
        assert_eq!(m.value(&path("ERR[3]-1.4.1")).text(), "E3");
        assert_eq!(m.value(&path("ERR[2]-1.4.2")).text(), "TWO");
        assert_eq!(m.value(&path("ERR[4]-1.4.2")), Value::NotPresent);
    }

    #[test]
    fn null_is_not_absent() {
        let m = Message::parse(ADT).unwrap();
        assert_eq!(m.value(&path("PID-3")), Value::Null);
        assert_eq!(m.value(&path("PID-1")), Value::NotPresent);
        assert_eq!(m.value(&path("PID-99")), Value::NotPresent);
        assert_eq!(m.value(&path("ZZZ-1")), Value::NotPresent);
    }

    #[test]
    fn decodes_atomic_values_only() {
        let m = Message::parse(ADT).unwrap();
        // PID-4.1 holds a subcomponent separator: returned as written.
        assert_eq!(m.value(&path("PID-4.1")).data(), Some(&br"A\T\B&C"[..]));
        assert_eq!(m.value(&path("PID-4.1.1")).text(), "A&B");
        assert_eq!(m.value(&path("PID-4.1.2")).text(), "C");
        assert!(matches!(
            m.value(&path("PID-4.1.2")),
            Value::Data(Cow::Borrowed(_))
        ));
        assert_eq!(m.value(&path("PID-4.2")).text(), "D");
        assert_eq!(
            m.value(&path("PID-2")).data(),
            Some(&b"9865821574^^^BC^PH^MOH~123^^^BC^XX"[..])
        );
    }

    #[test]
    fn accepts_cr_lf_and_crlf_and_blank_lines() {
        let cr = Message::parse(b"MSH|^~\\&|A\rPID|1\rNTE|x").unwrap();
        let lf = Message::parse(b"MSH|^~\\&|A\nPID|1\nNTE|x\n").unwrap();
        let crlf = Message::parse(b"\r\n  MSH|^~\\&|A\r\n\r\nPID|1\r\nNTE|x\r\n\r\n").unwrap();
        for m in [&cr, &lf, &crlf] {
            let ids: Vec<_> = m.segments().map(|s| s.id()).collect();
            assert_eq!(ids, [&b"MSH"[..], b"PID", b"NTE"]);
            assert_eq!(m.value(&path("MSH-3")).text(), "A");
            assert_eq!(m.value(&path("NTE-1")).text(), "x");
        }
    }

    #[test]
    fn separators_come_from_each_message() {
        let m = Message::parse(b"MSH!@#$%!APP!FAC\rPID!!1@2#3%4$T$5").unwrap();
        assert_eq!(m.delimiters().field, b'!');
        assert_eq!(m.msh(2).data(), Some(&b"@#$%"[..]));
        assert_eq!(m.value(&path("MSH-4")).text(), "FAC");
        assert_eq!(m.value(&path("PID-2.1")).text(), "1");
        assert_eq!(m.value(&path("PID-2.2")).text(), "2");
        assert_eq!(m.value(&path("PID-2[2].1.1")).text(), "3");
        assert_eq!(m.value(&path("PID-2[2].1.2")).text(), "4%5");
    }

    #[test]
    fn msh_fields_count_from_the_separator() {
        let m = Message::parse(b"MSH|^~\\&|A|B").unwrap();
        let msh = m.segment(b"MSH", 1).unwrap();
        assert!(msh.is_header());
        assert_eq!(msh.field_count(), 4);
        let fields: Vec<_> = msh.fields().collect();
        assert_eq!(
            fields,
            [(1, &b"|"[..]), (2, b"^~\\&"), (3, b"A"), (4, b"B")]
        );
        assert_eq!(m.value(&path("MSH-1.2")), Value::NotPresent);
    }

    #[test]
    fn extra_elements_are_ignored() {
        // Volume 5, 2.3.3: unexpected segments, fields and repetitions do not fail a parse.
        let m = Message::parse(b"MSH|^~\\&|A\rZZZ|1|2|3|4|5~6~7^8&9\r???\r").unwrap();
        assert_eq!(m.segment_count(), 3);
        assert_eq!(m.value(&path("ZZZ-5[3].2.2")).text(), "9");
    }

    #[test]
    fn refuses_what_is_not_a_message() {
        assert_eq!(Message::parse(b"").unwrap_err(), ParseError::Empty);
        assert_eq!(Message::parse(b" \r\n").unwrap_err(), ParseError::Empty);
        assert_eq!(
            Message::parse(b"PID|1").unwrap_err(),
            ParseError::NoHeader { offset: 0 }
        );
        assert_eq!(
            Message::parse(b"\nMSH").unwrap_err(),
            ParseError::ShortHeader { offset: 1 }
        );
        assert_eq!(
            Message::parse(b"MSH\r").unwrap_err(),
            ParseError::ShortHeader { offset: 0 }
        );
        assert!(matches!(
            Message::parse(b"MSH|^|A").unwrap_err(),
            ParseError::BadDelimiters {
                reason: DelimiterError::BadLength,
                ..
            }
        ));
        assert!(matches!(
            Message::parse(b"MSHA^~\\&").unwrap_err(),
            ParseError::BadDelimiters { .. }
        ));
    }

    #[test]
    fn parse_errors_map_to_the_volume5_codes() {
        let code = |input: &[u8]| Message::parse(input).unwrap_err().network_code().code();
        assert_eq!(code(b""), "VLDT004E");
        assert_eq!(code(b"PID|1"), "VLDT007E");
        assert_eq!(code(b"MSH"), "HNPS002E");
        assert_eq!(code(b"MSH|^^^^"), "HNPS002E");
    }

    #[test]
    fn keeps_the_input() {
        let m = Message::parse(ADT).unwrap();
        assert_eq!(m.as_bytes(), ADT);
        assert_eq!(m.segment(b"ERR", 2).unwrap().as_bytes(), b"ERR|^^^E2&TWO");
    }

    #[test]
    fn nth_part_counts_from_one() {
        assert_eq!(nth_part(b"a^b^^d", b'^', 1), Some(&b"a"[..]));
        assert_eq!(nth_part(b"a^b^^d", b'^', 3), Some(&b""[..]));
        assert_eq!(nth_part(b"a^b^^d", b'^', 4), Some(&b"d"[..]));
        assert_eq!(nth_part(b"a^b^^d", b'^', 5), None);
        assert_eq!(nth_part(b"", b'^', 1), Some(&b""[..]));
    }

    #[test]
    fn splits_streams_of_messages() {
        let input = b"FHS|^~\\&\rBHS|^~\\&\rMSH|^~\\&|A\rPID|1\r\nMSH|^~\\&|B\nBTS|2\rFTS|1\r";
        let parts = split_messages(input);
        assert_eq!(parts, [&b"MSH|^~\\&|A\rPID|1\r\n"[..], b"MSH|^~\\&|B\n"]);
        assert!(split_messages(b"no message here").is_empty());
        assert_eq!(split_messages(b"MSH|^~\\&|A"), [&b"MSH|^~\\&|A"[..]]);
    }
}
