//! Properties: writing then parsing gives back every value, for any delimiters and any
//! bytes; escaping then unescaping is the identity; no input makes the parser panic.

use hnapi::hl7::{self, Delimiters, Leaf, Message, MessageBuilder, Path, SegmentBuilder, Value};
use proptest::prelude::*;

/// Five distinct punctuation characters: field, component, repetition, escape, subcomponent.
fn delimiters() -> impl Strategy<Value = Delimiters> {
    let punct: Vec<u8> = (0x21u8..0x7f)
        .filter(|b| b.is_ascii_punctuation() && *b != b'"')
        .collect();
    proptest::sample::subsequence(punct, 5)
        .prop_shuffle()
        .prop_map(|c| {
            Delimiters::from_msh(c[0], &c[1..]).expect("five distinct punctuation characters")
        })
}

/// Bytes that are often the dangerous ones: delimiters, CR, LF, quotes, escapes.
fn data() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => proptest::sample::select(b"|^~\\&\r\n\"#$%!@XFSTREC0a ".to_vec()),
        2 => any::<u8>(),
        2 => proptest::char::range('A', 'Z').prop_map(|c| c as u8),
    ];
    proptest::collection::vec(byte, 0..12)
}

fn leaf() -> impl Strategy<Value = Leaf> {
    prop_oneof![
        2 => Just(Leaf::Empty),
        1 => Just(Leaf::Null),
        6 => data().prop_map(Leaf::Text),
        1 => Just(Leaf::Text(b"\"\"".to_vec())),
    ]
}

/// (field, repetition, component, subcomponent, value) settings of one segment.
type Settings = Vec<(u32, u32, u32, u32, Leaf)>;

fn settings(first_field: u32) -> impl Strategy<Value = Settings> {
    proptest::collection::vec(
        (
            first_field..first_field + 6,
            1u32..4,
            1u32..5,
            1u32..4,
            leaf(),
        ),
        0..10,
    )
}

fn segment_id() -> impl Strategy<Value = [u8; 3]> {
    proptest::sample::select(vec![
        *b"PID", *b"ZIA", *b"ERR", *b"NTE", *b"ZHD", *b"MSA", *b"IN1",
    ])
}

/// What a leaf reads back as.
fn expected(leaf: &Leaf) -> Value<'static> {
    match leaf {
        Leaf::Empty => Value::NotPresent,
        Leaf::Null => Value::Null,
        Leaf::Text(t) if t.is_empty() => Value::NotPresent,
        Leaf::Text(t) => Value::Data(t.clone().into()),
        Leaf::Raw(_) => unreachable!("not generated"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn escape_then_unescape_is_identity(d in delimiters(), bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let encoded = hl7::escape::encode(&bytes, &d);
        prop_assert!(!encoded.iter().any(|&b| b == b'\r' || b == b'\n' || (d.is_delimiter(b) && Some(b) != d.escape)));
        prop_assert_eq!(&*hl7::escape::decode(&encoded, &d), &bytes[..]);
    }

    #[test]
    fn write_then_parse_gives_every_value(
        d in delimiters(),
        msh in settings(3),
        segments in proptest::collection::vec((segment_id(), settings(1)), 0..6),
    ) {
        let mut b = MessageBuilder::new(d);
        // Later settings of the same place overwrite earlier ones; remember the last.
        let mut wanted: Vec<(Path, Leaf)> = Vec::new();
        let mut remember = |path: Path, leaf: Leaf| {
            wanted.retain(|(p, _)| *p != path);
            wanted.push((path, leaf));
        };
        for (f, r, c, s, leaf) in msh {
            b.msh().set_at(f, r, c, s, leaf.clone());
            remember(Path::new(*b"MSH", f).with_repetition(r).with_component(c).with_subcomponent(s), leaf);
        }
        let mut count: Vec<([u8; 3], u32)> = Vec::new();
        for (id, fields) in segments {
            let occurrence = match count.iter_mut().find(|(i, _)| *i == id) {
                Some((_, n)) => { *n += 1; *n }
                None => { count.push((id, 1)); 1 }
            };
            let mut segment = SegmentBuilder::new(id);
            for (f, r, c, s, leaf) in fields {
                segment.set_at(f, r, c, s, leaf.clone());
                remember(
                    Path::new(id, f).with_occurrence(occurrence).with_repetition(r).with_component(c).with_subcomponent(s),
                    leaf,
                );
            }
            b.push(segment);
        }

        let written = b.to_bytes();
        prop_assert!(written.ends_with(b"\r"));
        prop_assert!(!written.contains(&b'\n'));
        let m = Message::parse(&written).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(m.segment_count(), b.segments().len());
        prop_assert_eq!(m.delimiters(), b.delimiters());
        for (path, leaf) in &wanted {
            prop_assert_eq!(m.value(path), expected(leaf), "at {}", path);
        }
        // The canonical form is a fixed point.
        prop_assert_eq!(MessageBuilder::from_message(&m).to_bytes(), written);
    }

    #[test]
    fn parsing_anything_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256), tail in data()) {
        for input in [bytes.clone(), [b"MSH|^~\\&|".as_slice(), &bytes, &tail].concat()] {
            if let Ok(m) = Message::parse(&input) {
                let _ = hl7::check(&m);
                let _ = MessageBuilder::from_message(&m).to_bytes();
                for path in ["MSH-9.2", "PID-2[2].4.1", "ERR[2]-1.4.2"] {
                    let _ = m.value(&path.parse().unwrap());
                }
            }
        }
    }
}
