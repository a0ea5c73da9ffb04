//! The owned builder: assemble a message, then write it as canonical ER7.
//!
//! Canonical means: a CR after every segment (never LF), escapes applied to text, and
//! trailing empty fields, repetitions, components and subcomponents not written
//! (Volume 5, 2.3.3: `|ABC^DEF^^|` is written `|ABC^DEF|`).

use super::delimiters::Delimiters;
use super::escape;
use super::message::Message;
use super::path::Path;

/// The value of one atomic element (a subcomponent, or a component or field without
/// structure).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Leaf {
    /// Not present: nothing is written.
    #[default]
    Empty,
    /// Present but null: written `""`.
    Null,
    /// Data, escaped when written.
    Text(Vec<u8>),
    /// Bytes already in ER7 form for this message's delimiters, written as they are.
    /// Used to copy elements from a parsed message without decoding them.
    Raw(Vec<u8>),
}

impl Leaf {
    fn is_empty(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Null => false,
            Self::Text(b) | Self::Raw(b) => b.is_empty(),
        }
    }

    fn write(&self, d: &Delimiters, out: &mut Vec<u8>) {
        match self {
            Self::Empty => {}
            Self::Null => out.extend_from_slice(b"\"\""),
            Self::Text(b) => escape::encode_into(b, d, out),
            Self::Raw(b) => out.extend_from_slice(b),
        }
    }
}

impl From<&str> for Leaf {
    fn from(s: &str) -> Self {
        Self::Text(s.as_bytes().to_vec())
    }
}

impl From<String> for Leaf {
    fn from(s: String) -> Self {
        Self::Text(s.into_bytes())
    }
}

impl From<&[u8]> for Leaf {
    fn from(b: &[u8]) -> Self {
        Self::Text(b.to_vec())
    }
}

impl From<Vec<u8>> for Leaf {
    fn from(b: Vec<u8>) -> Self {
        Self::Text(b)
    }
}

/// Subcomponents of one component.
type Component = Vec<Leaf>;
/// Components of one repetition.
type Repetition = Vec<Component>;
/// Repetitions of one field.
type Field = Vec<Repetition>;

/// One segment being built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentBuilder {
    id: Vec<u8>,
    /// `fields[n - 1]` is field n. For MSH, fields 1 and 2 come from the delimiters.
    fields: Vec<Field>,
}

impl SegmentBuilder {
    /// An empty segment with this id (normally three upper-case letters or digits).
    pub fn new(id: impl AsRef<[u8]>) -> Self {
        Self {
            id: id.as_ref().to_vec(),
            fields: Vec::new(),
        }
    }

    /// The segment id.
    pub fn id(&self) -> &[u8] {
        &self.id
    }

    /// Replaces the whole of field `n` (from 1) with one value.
    pub fn set(&mut self, n: u32, value: impl Into<Leaf>) -> &mut Self {
        *slot(&mut self.fields, n) = vec![vec![vec![value.into()]]];
        self
    }

    /// Sets one subcomponent, keeping the rest of the field. Every index counts from 1.
    pub fn set_at(
        &mut self,
        n: u32,
        repetition: u32,
        component: u32,
        subcomponent: u32,
        value: impl Into<Leaf>,
    ) -> &mut Self {
        let field = slot(&mut self.fields, n);
        let rep = slot(field, repetition);
        let comp = slot(rep, component);
        *slot(comp, subcomponent) = value.into();
        self
    }

    /// [`SegmentBuilder::set`], by value, for chaining.
    pub fn with(mut self, n: u32, value: impl Into<Leaf>) -> Self {
        self.set(n, value);
        self
    }

    fn is_header(&self) -> bool {
        matches!(self.id.as_slice(), b"MSH" | b"BHS" | b"FHS")
    }

    /// True when the segment carries nothing: no id (or only white space) and no value,
    /// such as a stray `||||` or `|^~` line.
    fn is_blank(&self) -> bool {
        self.id.iter().all(u8::is_ascii_whitespace) && self.fields.iter().all(field_is_empty)
    }

    /// Writes the segment and its CR; a blank segment is not written at all, since as an
    /// empty line it would not be a segment.
    fn write(&self, d: &Delimiters, out: &mut Vec<u8>) {
        if self.is_blank() {
            return;
        }
        out.extend_from_slice(&self.id);
        let first = if self.is_header() {
            out.push(d.field);
            out.extend_from_slice(&d.encoding_characters());
            3
        } else {
            1
        };
        let fields = self.fields.get(first - 1..).unwrap_or_default();
        let last = fields
            .iter()
            .rposition(|f| !field_is_empty(f))
            .map_or(0, |i| i + 1);
        for field in &fields[..last] {
            out.push(d.field);
            write_field(field, d, out);
        }
        out.push(b'\r');
    }
}

/// The element at `n` (from 1), created empty when missing. 0 is taken as 1.
fn slot<T: Default>(items: &mut Vec<T>, n: u32) -> &mut T {
    let i = n.max(1) as usize - 1;
    if items.len() <= i {
        items.resize_with(i + 1, T::default);
    }
    &mut items[i]
}

fn component_is_empty(c: &Component) -> bool {
    c.iter().all(Leaf::is_empty)
}

fn repetition_is_empty(r: &Repetition) -> bool {
    r.iter().all(component_is_empty)
}

fn field_is_empty(f: &Field) -> bool {
    f.iter().all(repetition_is_empty)
}

/// Writes `items` separated by `sep`, leaving out the empty ones at the end.
fn write_joined<T>(
    items: &[T],
    sep: u8,
    is_empty: fn(&T) -> bool,
    out: &mut Vec<u8>,
    mut write: impl FnMut(&T, &mut Vec<u8>),
) {
    let last = items
        .iter()
        .rposition(|x| !is_empty(x))
        .map_or(0, |i| i + 1);
    for (i, item) in items[..last].iter().enumerate() {
        if i > 0 {
            out.push(sep);
        }
        write(item, out);
    }
}

fn write_field(field: &Field, d: &Delimiters, out: &mut Vec<u8>) {
    let sub = d.subcomponent.unwrap_or(b'&');
    write_joined(field, d.repetition, repetition_is_empty, out, |rep, out| {
        write_joined(rep, d.component, component_is_empty, out, |comp, out| {
            write_joined(comp, sub, Leaf::is_empty, out, |leaf, out| {
                leaf.write(d, out)
            });
        });
    });
}

/// A message being built; the first segment is always its MSH.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageBuilder {
    delimiters: Delimiters,
    segments: Vec<SegmentBuilder>,
}

impl MessageBuilder {
    /// A message with these delimiters (completed, see [`Delimiters::complete`]) and an
    /// empty MSH segment.
    pub fn new(delimiters: Delimiters) -> Self {
        Self {
            delimiters: delimiters.complete(),
            segments: vec![SegmentBuilder::new("MSH")],
        }
    }

    /// A builder holding `msg`, every element kept as written. Writing it gives the
    /// canonical form of `msg`: CR terminators and no trailing empty elements.
    pub fn from_message(msg: &Message<'_>) -> Self {
        let mut out = Self::new(*msg.delimiters());
        out.segments.clear();
        let d = *msg.delimiters();
        for segment in msg.segments() {
            let mut built = SegmentBuilder::new(segment.id());
            let first = if segment.is_header() { 3 } else { 1 };
            for (n, raw) in segment.fields().skip(first as usize - 1) {
                if raw.is_empty() {
                    continue;
                }
                let field = slot(&mut built.fields, n);
                for rep in raw.split(|&b| b == d.repetition) {
                    field.push(
                        rep.split(|&b| b == d.component)
                            .map(|comp| match d.subcomponent {
                                Some(s) => comp
                                    .split(|&b| b == s)
                                    .map(|leaf| out.raw_leaf(&d, leaf))
                                    .collect(),
                                None => vec![out.raw_leaf(&d, comp)],
                            })
                            .collect(),
                    );
                }
            }
            out.segments.push(built);
        }
        if out.segments.first().is_none_or(|s| s.id != b"MSH") {
            out.segments.insert(0, SegmentBuilder::new("MSH"));
        }
        out
    }

    /// A leaf holding `raw`, an element written with the delimiters `from`, rewritten
    /// for this builder's delimiters. They differ only when `from` lacked an escape or
    /// subcomponent character, which may then appear in `raw` as plain data.
    pub fn raw_leaf(&self, from: &Delimiters, raw: &[u8]) -> Leaf {
        let to = &self.delimiters;
        if raw.is_empty() {
            return Leaf::Empty;
        }
        if from == to
            || !raw
                .iter()
                .any(|&b| to.is_delimiter(b) && !from.is_delimiter(b))
        {
            return Leaf::Raw(raw.to_vec());
        }
        let mut out = Vec::with_capacity(raw.len() + 4);
        for &b in raw {
            if to.is_delimiter(b) && !from.is_delimiter(b) {
                escape::encode_into(&[b], to, &mut out);
            } else {
                out.push(b);
            }
        }
        Leaf::Raw(out)
    }

    /// The delimiters the message is written with.
    pub fn delimiters(&self) -> &Delimiters {
        &self.delimiters
    }

    /// The MSH segment.
    pub fn msh(&mut self) -> &mut SegmentBuilder {
        &mut self.segments[0]
    }

    /// Appends a segment.
    pub fn push(&mut self, segment: SegmentBuilder) -> &mut Self {
        self.segments.push(segment);
        self
    }

    /// The segments, MSH first.
    pub fn segments(&self) -> &[SegmentBuilder] {
        &self.segments
    }

    /// The `occurrence`-th segment with this id, if there is one.
    pub fn segment_mut(&mut self, id: &[u8], occurrence: u32) -> Option<&mut SegmentBuilder> {
        let nth = occurrence.checked_sub(1)? as usize;
        self.segments.iter_mut().filter(|s| s.id == id).nth(nth)
    }

    /// Sets the element at `path`, appending segments when the message has fewer with
    /// that id. A path to a whole field replaces the field; a path with a repetition,
    /// component or subcomponent sets that element and keeps the rest. MSH-1 and MSH-2
    /// come from the delimiters and cannot be set.
    pub fn set(&mut self, path: &Path, value: impl Into<Leaf>) -> &mut Self {
        let id = path.segment();
        if id == b"MSH" && path.field() <= 2 {
            return self;
        }
        let have = self.segments.iter().filter(|s| s.id == id).count() as u32;
        for _ in have..path.occurrence() {
            self.segments.push(SegmentBuilder::new(id));
        }
        if let Some(segment) = self.segment_mut(id, path.occurrence()) {
            if path.repetition().is_none() && path.component().is_none() {
                segment.set(path.field(), value);
            } else {
                segment.set_at(
                    path.field(),
                    path.repetition().unwrap_or(1),
                    path.component().unwrap_or(1),
                    path.subcomponent().unwrap_or(1),
                    value,
                );
            }
        }
        self
    }

    /// Appends the message in canonical ER7 to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        for segment in &self.segments {
            segment.write(&self.delimiters, out);
        }
    }

    /// The message in canonical ER7.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.write(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hl7::Value;

    fn path(s: &str) -> Path {
        s.parse().unwrap()
    }

    #[test]
    fn writes_canonical_er7() {
        let mut b = MessageBuilder::new(Delimiters::STANDARD);
        b.set(&path("MSH-3"), "APP")
            .set(&path("MSH-9.1"), "R02")
            .set(&path("MSH-9.2"), "");
        b.push(
            SegmentBuilder::new("PID")
                .with(2, "9865821574")
                .with(7, Leaf::Null),
        );
        b.set(&path("PID-2.4"), "BC").set(&path("PID-2.5"), "PH");
        b.set(&path("NTE-3"), "SMITH & WESSON|\r\n");
        assert_eq!(
            b.to_bytes(),
            b"MSH|^~\\&|APP||||||R02\rPID||9865821574^^^BC^PH|||||\"\"\rNTE|||SMITH \\T\\ WESSON\\F\\\\C\\\\X0A\\\r"
        );
    }

    #[test]
    fn drops_trailing_empty_elements() {
        let msg = Message::parse(b"MSH|^~\\&|A|||||\nPID|1|ABC^DEF^^|^XXX&YYY&&^|~~|\n").unwrap();
        let out = MessageBuilder::from_message(&msg).to_bytes();
        assert_eq!(out, b"MSH|^~\\&|A\rPID|1|ABC^DEF|^XXX&YYY\r");
    }

    #[test]
    fn leaves_out_segments_that_carry_nothing() {
        // Found by the fuzzer: `||||` and `|^~` lines have no id and no value; written as
        // empty lines they would vanish on the next parse, so they are not written.
        let msg = Message::parse(b"MSH|^~\\&|A\r||||\r \t|\r|^~\rPID||X\r|B\r").unwrap();
        assert_eq!(msg.segment_count(), 6);
        let out = MessageBuilder::from_message(&msg).to_bytes();
        assert_eq!(out, b"MSH|^~\\&|A\rPID||X\r|B\r");
        let again = Message::parse(&out).unwrap();
        assert_eq!(MessageBuilder::from_message(&again).to_bytes(), out);
    }

    #[test]
    fn keeps_values_as_written() {
        let input = b"MSH|^~\\&|A\rNTE|1||\\H\\BOLD\\N\\ \\Zlocal\\ \\X41\\~\"\"\r";
        let msg = Message::parse(input).unwrap();
        assert_eq!(MessageBuilder::from_message(&msg).to_bytes(), input);
    }

    #[test]
    fn set_paths_create_segments_and_keep_siblings() {
        let mut b = MessageBuilder::new(Delimiters::STANDARD);
        b.set(&path("ERR[2]-1.4.1"), "E2")
            .set(&path("ERR[2]-1.4.2"), "TWO");
        b.set(&path("PID-3[2].1"), "X")
            .set(&path("PID-3[1].1"), "Y");
        let out = b.to_bytes();
        assert_eq!(out, b"MSH|^~\\&\rERR\rERR|^^^E2&TWO\rPID|||Y~X\r");
        let m = Message::parse(&out).unwrap();
        assert_eq!(m.value(&path("ERR[2]-1.4.2")).text(), "TWO");
        assert_eq!(m.value(&path("PID-3[2]")).text(), "X");
    }

    #[test]
    fn other_delimiters_and_incomplete_ones() {
        let msg = Message::parse(b"MSH|^~|A&B\rPID|x\\y").unwrap();
        let b = MessageBuilder::from_message(&msg);
        let out = b.to_bytes();
        // `&` and `\` were data in a message that declared neither; now they are escaped.
        assert_eq!(out, b"MSH|^~\\&|A\\T\\B\rPID|x\\E\\y\r");
        let again = Message::parse(&out).unwrap();
        assert_eq!(
            again.value(&path("MSH-3")),
            Value::Data(b"A&B".to_vec().into())
        );
        assert_eq!(again.value(&path("PID-1")).text(), "x\\y");
    }

    #[test]
    fn msh_delimiters_cannot_be_overwritten() {
        let mut b = MessageBuilder::new(Delimiters::from_msh(b'!', b"@#$%").unwrap());
        b.set(&path("MSH-1"), "|")
            .set(&path("MSH-2"), "^~\\&")
            .set(&path("MSH-3"), "A!B");
        assert_eq!(b.to_bytes(), b"MSH!@#$%!A$F$B\r");
    }
}
