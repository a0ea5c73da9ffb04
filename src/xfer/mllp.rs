//! MLLP, the Minimal Lower Layer Protocol: HL7 v2 framing over a byte stream.
//!
//! ```text
//! 0x0B  message bytes  0x1C 0x0D      (start block, data, end block, carriage return)
//! ```
//!
//! Many messages follow one another on one connection, in order. Between frames, CR,
//! LF, space and tab are tolerated (interface engines send them); anything else there is
//! an error. A message may not hold `0x1C` (it ends the frame). Reading, `0x0B` inside a
//! frame is passed on as data, since only the end of a frame is ambiguous to this
//! decoder; writing, [`encode`] refuses a message holding either byte, because receivers
//! differ on `0x0B` (some restart the frame there) and no HL7 message holds one.
//!
//! [`Decoder`] takes bytes in any pieces and yields every complete message, borrowed
//! from the input when the frame lies whole in it and otherwise owned, built as the
//! pieces come: no message is copied more than once. [`MllpReader`] runs it over any
//! [`AsyncRead`], cancel-safe.

use std::borrow::Cow;
use std::fmt;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Starts a frame.
pub const START: u8 = 0x0B;
/// Ends a frame's data; [`CR`] follows.
pub const END: u8 = 0x1C;
/// Follows [`END`].
pub const CR: u8 = 0x0D;

/// Appends `message` framed: `0x0B`, the message, `0x1C 0x0D`.
///
/// A message holding `0x0B` or `0x1C` is refused, and `out` is left as it was: no HL7
/// message holds either (they are control characters), and a receiver would take `0x1C`
/// as the end of the frame, or `0x0B` as the start of another, and read something other
/// than what was sent.
pub fn encode(message: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if let Some(offset) = memchr::memchr2(START, END, message) {
        return Err(EncodeError::FramingByte {
            byte: message[offset],
            offset,
        });
    }
    out.reserve(message.len() + 3);
    out.push(START);
    out.extend_from_slice(message);
    out.extend_from_slice(&[END, CR]);
    Ok(())
}

/// Why [`encode`] cannot frame a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EncodeError {
    /// The message holds a byte that starts (`0x0B`) or ends (`0x1C`) a frame.
    FramingByte {
        /// That byte.
        byte: u8,
        /// Its offset in the message, from 0.
        offset: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FramingByte { byte, offset } => write!(
                f,
                "the message holds the MLLP framing byte 0x{byte:02X} at offset {offset}; \
                 it cannot be framed unambiguously"
            ),
        }
    }
}

impl std::error::Error for EncodeError {}

/// Why a stream is not well-framed MLLP. Offsets count the bytes the decoder was given,
/// from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MllpError {
    /// A byte between frames that is neither `0x0B` nor white space.
    OutsideFrame {
        /// Its offset in the stream.
        offset: u64,
    },
    /// A frame's data grew past the maximum before it ended.
    TooLarge {
        /// The maximum in force.
        max: usize,
    },
    /// `0x1C` was not followed by `0x0D`.
    MissingCr {
        /// The offset of the byte that should have been `0x0D`.
        offset: u64,
    },
    /// The stream ended inside a frame.
    EndedInFrame {
        /// Bytes of the frame's data received.
        received: usize,
    },
}

impl fmt::Display for MllpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutsideFrame { offset } => write!(
                f,
                "a byte outside an MLLP frame at offset {offset} (a frame starts with 0x0B)"
            ),
            Self::TooLarge { max } => {
                write!(f, "an MLLP frame is larger than the maximum of {max} bytes")
            }
            Self::MissingCr { offset } => {
                write!(f, "0x1C was not followed by 0x0D at offset {offset}")
            }
            Self::EndedInFrame { received } => write!(
                f,
                "the connection ended inside an MLLP frame ({received} bytes of it received)"
            ),
        }
    }
}

impl std::error::Error for MllpError {}

/// Where the decoder is in the stream.
enum State {
    /// Between frames: white space may come, then `0x0B`.
    Between,
    /// Inside a frame begun in an earlier piece: its data so far.
    Inside(Vec<u8>),
    /// A piece ended just after a frame's `0x1C`: its data, waiting for `0x0D`.
    AfterEnd(Vec<u8>),
    /// The stream went wrong; it cannot be resynchronised.
    Failed(MllpError),
}

/// An incremental MLLP decoder. Feed it pieces of the stream with [`Decoder::decode`],
/// and call [`Decoder::finish`] when the stream ends. After an error the stream cannot
/// be resynchronised: the decoder repeats the error; close the connection.
pub struct Decoder {
    state: State,
    max: usize,
    /// Bytes of the stream taken so far.
    offset: u64,
}

impl Decoder {
    /// A decoder of messages of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            state: State::Between,
            max,
            offset: 0,
        }
    }

    /// True between frames (where a stream may end).
    pub fn is_between_frames(&self) -> bool {
        matches!(self.state, State::Between)
    }

    /// Takes bytes from the front of `input` up to the end of the next complete message
    /// and returns it; `None` when `input` is used up without completing one (what it
    /// held is kept). Call again with the rest until `None` to have every message.
    ///
    /// A message that lies whole in `input` is borrowed from it; one that began in an
    /// earlier piece was gathered as the pieces came and is handed over, not copied.
    pub fn decode<'a>(&mut self, input: &mut &'a [u8]) -> Result<Option<Cow<'a, [u8]>>, MllpError> {
        let result = self.next_message(input);
        if let Err(e) = result {
            self.state = State::Failed(e);
        }
        result
    }

    fn next_message<'a>(
        &mut self,
        input: &mut &'a [u8],
    ) -> Result<Option<Cow<'a, [u8]>>, MllpError> {
        loop {
            match std::mem::replace(&mut self.state, State::Between) {
                State::Between => {
                    if !self.at_frame_start(input)? {
                        return Ok(None);
                    }
                    self.advance(input, 1);
                    if let Some(message) = self.borrowed_frame(input)? {
                        return Ok(Some(Cow::Borrowed(message)));
                    }
                    // The frame goes on past this piece (or ends with its last byte).
                }
                State::Inside(mut data) => {
                    let room = self.max - data.len();
                    let window = &input[..input.len().min(room.saturating_add(1))];
                    match memchr::memchr(END, window) {
                        None if window.len() > room => {
                            return Err(MllpError::TooLarge { max: self.max });
                        }
                        None => {
                            data.extend_from_slice(window);
                            self.advance(input, window.len());
                            self.state = State::Inside(data);
                            return Ok(None);
                        }
                        Some(end) => {
                            data.extend_from_slice(&window[..end]);
                            self.advance(input, end + 1);
                            self.state = State::AfterEnd(data);
                        }
                    }
                }
                State::AfterEnd(data) => match input.first() {
                    None => {
                        self.state = State::AfterEnd(data);
                        return Ok(None);
                    }
                    Some(&CR) => {
                        self.advance(input, 1);
                        return Ok(Some(Cow::Owned(data)));
                    }
                    Some(_) => {
                        return Err(MllpError::MissingCr {
                            offset: self.offset,
                        });
                    }
                },
                State::Failed(e) => return Err(e),
            }
        }
    }

    /// Checks that the stream may end here: between frames, and no error before.
    pub fn finish(&self) -> Result<(), MllpError> {
        match &self.state {
            State::Between => Ok(()),
            State::Failed(e) => Err(*e),
            State::Inside(data) | State::AfterEnd(data) => Err(MllpError::EndedInFrame {
                received: data.len(),
            }),
        }
    }

    fn advance(&mut self, input: &mut &[u8], n: usize) {
        *input = &input[n..];
        self.offset += n as u64;
    }

    /// Between frames: skips white space; true with `input` at a `0x0B`, false when
    /// `input` is used up.
    fn at_frame_start(&mut self, input: &mut &[u8]) -> Result<bool, MllpError> {
        let skip = input
            .iter()
            .position(|b| !matches!(b, b'\r' | b'\n' | b' ' | b'\t'))
            .unwrap_or(input.len());
        self.advance(input, skip);
        match input.first() {
            None => Ok(false),
            Some(&START) => Ok(true),
            Some(_) => Err(MllpError::OutsideFrame {
                offset: self.offset,
            }),
        }
    }

    /// Just after a `0x0B`: the whole frame's data if it lies in `input` (which then
    /// moves past its `0x0D`); otherwise takes all of `input` into the decoder's state.
    fn borrowed_frame<'a>(&mut self, input: &mut &'a [u8]) -> Result<Option<&'a [u8]>, MllpError> {
        let whole: &'a [u8] = input;
        let window = &whole[..whole.len().min(self.max.saturating_add(1))];
        match memchr::memchr(END, window) {
            Some(end) => match whole.get(end + 1) {
                Some(&CR) => {
                    self.advance(input, end + 2);
                    Ok(Some(&whole[..end]))
                }
                Some(_) => Err(MllpError::MissingCr {
                    offset: self.offset + end as u64 + 1,
                }),
                None => {
                    self.state = State::AfterEnd(whole[..end].to_vec());
                    self.advance(input, end + 1);
                    Ok(None)
                }
            },
            None if window.len() > self.max => Err(MllpError::TooLarge { max: self.max }),
            None => {
                // The Vec grows as the pieces come.
                self.state = State::Inside(whole.to_vec());
                self.advance(input, whole.len());
                Ok(None)
            }
        }
    }
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (state, received) = match &self.state {
            State::Between => ("Between", 0),
            State::Inside(d) => ("Inside", d.len()),
            State::AfterEnd(d) => ("AfterEnd", d.len()),
            State::Failed(_) => ("Failed", 0),
        };
        f.debug_struct("Decoder")
            .field("state", &state)
            .field("received", &received)
            .field("max", &self.max)
            .field("offset", &self.offset)
            .finish()
    }
}

/// Why [`MllpReader::next`] did not yield a message.
#[derive(Debug)]
#[non_exhaustive]
pub enum MllpReadError {
    /// The stream is not well-framed.
    Mllp(MllpError),
    /// The stream failed.
    Io(std::io::Error),
}

impl fmt::Display for MllpReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Mllp(e) => e.fmt(f),
            Self::Io(e) => write!(f, "connection error: {e}"),
        }
    }
}

impl std::error::Error for MllpReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Mllp(e) => Some(e),
            Self::Io(e) => Some(e),
        }
    }
}

impl From<MllpError> for MllpReadError {
    fn from(e: MllpError) -> Self {
        Self::Mllp(e)
    }
}

/// The buffer a reader reads into.
const READ_BUFFER: usize = 8 * 1024;

/// Reads MLLP messages from any [`AsyncRead`] through a buffer. [`MllpReader::next`] is
/// cancel-safe: dropping it loses no data.
pub struct MllpReader<R> {
    reader: R,
    buf: Vec<u8>,
    /// The first byte of `buf` not yet given to the decoder.
    start: usize,
    decoder: Decoder,
    /// Bytes read from the stream so far.
    total: u64,
}

impl<R: AsyncRead + Unpin> MllpReader<R> {
    /// A reader of messages of at most `max` bytes from `reader`.
    pub fn new(reader: R, max: usize) -> Self {
        Self {
            reader,
            buf: Vec::new(),
            start: 0,
            decoder: Decoder::new(max),
            total: 0,
        }
    }

    /// The next message; `Ok(None)` when the stream ended cleanly between frames.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, MllpReadError> {
        loop {
            let mut rest = &self.buf[self.start..];
            let before = rest.len();
            let message = self.decoder.decode(&mut rest)?;
            self.start += before - rest.len();
            if let Some(message) = message {
                // The one copy of a message that lay whole in the buffer.
                return Ok(Some(message.into_owned()));
            }
            // The decoder took every buffered byte: read more into the emptied buffer.
            self.buf.clear();
            self.start = 0;
            if self.buf.capacity() < READ_BUFFER {
                self.buf.reserve(READ_BUFFER);
            }
            // Into the spare capacity: a cancelled read takes nothing.
            let n = self
                .reader
                .read_buf(&mut self.buf)
                .await
                .map_err(MllpReadError::Io)?;
            if n == 0 {
                self.decoder.finish()?;
                return Ok(None);
            }
            self.total += n as u64;
        }
    }

    /// True when every byte read so far belongs to complete messages (no frame begun):
    /// after a cancelled [`MllpReader::next`], the peer is idle, not stalled mid-frame.
    pub fn is_between_frames(&self) -> bool {
        self.start == self.buf.len() && self.decoder.is_between_frames()
    }

    /// Bytes read from the stream so far (to tell a slow peer from a silent one).
    pub fn bytes_read(&self) -> u64 {
        self.total
    }

    /// The underlying stream.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.reader
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: &[u8] = b"MSH|^~\\&|A|F|B|G|1||ADT^A01|1|P|2.3\rPID|1\r";
    const B: &[u8] = b"MSH|^~\\&|A|F|B|G|2||ADT^A01|2|P|2.3\r";

    fn framed(messages: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in messages {
            encode(m, &mut out).unwrap();
        }
        out
    }

    /// Every message `decoder` yields from `input`, as owned bytes, and whether each was
    /// borrowed.
    fn all(decoder: &mut Decoder, mut input: &[u8]) -> Result<Vec<(Vec<u8>, bool)>, MllpError> {
        let mut out = Vec::new();
        while let Some(m) = decoder.decode(&mut input)? {
            let borrowed = matches!(m, Cow::Borrowed(_));
            out.push((m.into_owned(), borrowed));
        }
        assert!(input.is_empty(), "None left input behind");
        Ok(out)
    }

    #[test]
    fn encode_frames() {
        let mut out = Vec::new();
        encode(b"MSH|", &mut out).unwrap();
        encode(b"", &mut out).unwrap();
        assert_eq!(out, b"\x0bMSH|\x1c\x0d\x0b\x1c\x0d");
    }

    #[test]
    fn encode_refuses_framing_bytes_and_writes_nothing() {
        let mut out = b"before".to_vec();
        for (message, byte, offset) in [
            (&b"MSH|\x1c\rPID|1\r"[..], END, 4),
            (b"MSH|^~\\&|A\x0bB", START, 10),
            (b"\x0b", START, 0),
            (b"\x1c", END, 0),
            // The first one is named.
            (b"MSH|\x0b\x1c", START, 4),
            (b"MSH|\x1c\x0d\x0bMSH|", END, 4),
        ] {
            assert_eq!(
                encode(message, &mut out),
                Err(EncodeError::FramingByte { byte, offset }),
                "{message:?}"
            );
            assert_eq!(out, b"before", "nothing written for {message:?}");
        }
        // Other control bytes (and CR, LF) are not framing bytes.
        encode(b"\x00\x0c\x1b\x1d\r\n", &mut out).unwrap();
        assert_eq!(out, b"before\x0b\x00\x0c\x1b\x1d\r\n\x1c\x0d");
        let shown = EncodeError::FramingByte {
            byte: END,
            offset: 4,
        }
        .to_string();
        assert!(
            shown.contains("0x1C") && shown.contains("offset 4"),
            "{shown}"
        );
    }

    #[test]
    fn several_messages_in_one_read_are_borrowed() {
        let mut d = Decoder::new(1000);
        let got = all(&mut d, &framed(&[A, B, b"", A])).unwrap();
        assert_eq!(
            got,
            [
                (A.to_vec(), true),
                (B.to_vec(), true),
                (Vec::new(), true),
                (A.to_vec(), true)
            ]
        );
        assert!(d.is_between_frames());
        assert_eq!(d.finish(), Ok(()));
    }

    #[test]
    fn one_message_split_into_single_bytes() {
        let wire = framed(&[A, B]);
        let mut d = Decoder::new(1000);
        let mut got = Vec::new();
        for b in &wire {
            got.extend(all(&mut d, std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(got, [(A.to_vec(), false), (B.to_vec(), false)]);
        assert_eq!(d.finish(), Ok(()));
    }

    #[test]
    fn white_space_between_frames_is_tolerated() {
        let mut wire = b"\r\n".to_vec();
        encode(A, &mut wire).unwrap();
        wire.extend_from_slice(b"\r\n \t\r");
        encode(B, &mut wire).unwrap();
        wire.extend_from_slice(b"\n");
        let mut d = Decoder::new(1000);
        let got: Vec<Vec<u8>> = all(&mut d, &wire)
            .unwrap()
            .into_iter()
            .map(|(m, _)| m)
            .collect();
        assert_eq!(got, [A.to_vec(), B.to_vec()]);
        assert_eq!(d.finish(), Ok(()));
    }

    #[test]
    fn garbage_between_frames_is_refused_where_it_is() {
        let mut wire = framed(&[A]);
        let at = wire.len() as u64 + 2;
        wire.extend_from_slice(b"\r\nX");
        encode(B, &mut wire).unwrap();
        let mut d = Decoder::new(1000);
        let mut input = &wire[..];
        assert_eq!(d.decode(&mut input).unwrap().as_deref(), Some(A));
        assert_eq!(
            d.decode(&mut input),
            Err(MllpError::OutsideFrame { offset: at })
        );
        // The error stays: the stream cannot be trusted again.
        assert_eq!(
            d.decode(&mut &framed(&[B])[..]),
            Err(MllpError::OutsideFrame { offset: at })
        );
        assert_eq!(d.finish(), Err(MllpError::OutsideFrame { offset: at }));
        // HL7 without framing, from the first byte.
        assert_eq!(
            Decoder::new(1000).decode(&mut &A[..]),
            Err(MllpError::OutsideFrame { offset: 0 })
        );
    }

    #[test]
    fn a_frame_over_the_maximum_is_refused_whole_or_in_pieces() {
        let wire = framed(&[b"0123456789"]);
        // Exactly the maximum is fine, whole and in pieces.
        assert_eq!(all(&mut Decoder::new(10), &wire).unwrap().len(), 1);
        let mut d = Decoder::new(10);
        let mut n = 0;
        for piece in wire.chunks(3) {
            n += all(&mut d, piece).unwrap().len();
        }
        assert_eq!(n, 1);
        // One byte more is not, and without waiting for the frame's end.
        assert_eq!(
            all(&mut Decoder::new(9), &wire),
            Err(MllpError::TooLarge { max: 9 })
        );
        assert_eq!(
            all(&mut Decoder::new(9), &wire[..11]),
            Err(MllpError::TooLarge { max: 9 })
        );
        let mut d = Decoder::new(9);
        let mut result = Ok(Vec::new());
        for piece in wire.chunks(4) {
            result = all(&mut d, piece);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(MllpError::TooLarge { max: 9 }));
    }

    #[test]
    fn an_end_block_needs_its_carriage_return() {
        let wire = b"\x0bABC\x1cX";
        assert_eq!(
            all(&mut Decoder::new(100), wire),
            Err(MllpError::MissingCr { offset: 5 })
        );
        // Split just after 0x1C, and inside a frame begun earlier.
        let mut d = Decoder::new(100);
        assert_eq!(all(&mut d, &wire[..5]), Ok(Vec::new()));
        assert_eq!(
            all(&mut d, &wire[5..]),
            Err(MllpError::MissingCr { offset: 5 })
        );
        let mut d = Decoder::new(100);
        assert_eq!(all(&mut d, &wire[..2]), Ok(Vec::new()));
        assert_eq!(
            all(&mut d, &wire[2..]),
            Err(MllpError::MissingCr { offset: 5 })
        );
    }

    #[test]
    fn the_stream_may_end_only_between_frames() {
        let wire = framed(&[A]);
        for cut in 1..wire.len() {
            let mut d = Decoder::new(1000);
            assert_eq!(all(&mut d, &wire[..cut]), Ok(Vec::new()));
            assert_eq!(
                d.finish(),
                Err(MllpError::EndedInFrame {
                    received: (cut - 1).min(A.len())
                }),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn errors_show_no_message_bytes() {
        let shown = format!(
            "{:?} {}",
            Decoder::new(1000),
            MllpError::EndedInFrame { received: 3 }
        );
        assert!(!shown.contains("MSH"), "{shown}");
    }

    proptest! {
        #[test]
        fn encode_refuses_exactly_the_messages_holding_a_framing_byte(
            message in proptest::collection::vec(
                proptest::sample::select(vec![0x0B, 0x1C, 0x0D, b'|', b'A', 0x00]),
                0..40,
            ),
        ) {
            let mut out = Vec::new();
            match (encode(&message, &mut out), message.iter().position(|b| *b == START || *b == END)) {
                (Ok(()), None) => {
                    prop_assert_eq!(all(&mut Decoder::new(100), &out).unwrap(), vec![(message, true)]);
                }
                (Err(EncodeError::FramingByte { byte, offset }), Some(at)) => {
                    prop_assert_eq!((byte, offset), (message[at], at));
                    prop_assert!(out.is_empty());
                }
                (result, at) => prop_assert!(false, "{:?} for a framing byte at {:?}", result, at),
            }
        }

        #[test]
        fn any_messages_in_any_pieces(
            messages in proptest::collection::vec(
                proptest::collection::vec(
                    any::<u8>().prop_filter("not a framing byte", |b| *b != END && *b != START),
                    0..200,
                ),
                0..6,
            ),
            gaps in proptest::collection::vec(proptest::sample::select(vec![&b""[..], b"\r", b"\r\n", b" \t\n"]), 6),
            sizes in proptest::collection::vec(1usize..50, 1..8),
        ) {
            let mut wire = Vec::new();
            for (m, gap) in messages.iter().zip(&gaps) {
                wire.extend_from_slice(gap);
                encode(m, &mut wire).unwrap();
            }
            let mut d = Decoder::new(200);
            let mut got = Vec::new();
            let mut at = 0;
            let mut i = 0;
            while at < wire.len() {
                let end = (at + sizes[i % sizes.len()]).min(wire.len());
                got.extend(all(&mut d, &wire[at..end]).unwrap().into_iter().map(|(m, _)| m));
                at = end;
                i += 1;
            }
            prop_assert_eq!(d.finish(), Ok(()));
            prop_assert_eq!(got, messages);
        }
    }

    #[tokio::test]
    async fn the_reader_reads_what_the_decoder_reads() {
        let big = vec![b'x'; 20_000];
        let wire = framed(&[A, &big, b"", B]);
        let (mut tx, rx) = tokio::io::duplex(64);
        let sender = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut at = 0;
            let mut size = 1;
            while at < wire.len() {
                let end = (at + size).min(wire.len());
                tx.write_all(&wire[at..end]).await.unwrap();
                at = end;
                size = size % 97 + 1;
            }
        });
        let mut reader = MllpReader::new(rx, 100_000);
        for expected in [A, &big[..], b"", B] {
            assert_eq!(reader.next().await.unwrap().as_deref(), Some(expected));
        }
        sender.await.unwrap();
        assert!(reader.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn the_reader_names_a_truncated_stream_and_a_bad_one() {
        let wire = framed(&[A]);
        let mut r = MllpReader::new(&wire[..wire.len() - 1], 1000);
        assert!(matches!(
            r.next().await,
            Err(MllpReadError::Mllp(MllpError::EndedInFrame { .. }))
        ));
        let mut r = MllpReader::new(&b"  garbage"[..], 1000);
        assert!(matches!(
            r.next().await,
            Err(MllpReadError::Mllp(MllpError::OutsideFrame { offset: 2 }))
        ));
    }

    #[tokio::test]
    async fn a_cancelled_read_loses_nothing() {
        use tokio::io::AsyncWriteExt;
        let wire = framed(&[A, B]);
        let (mut tx, rx) = tokio::io::duplex(1024);
        let mut reader = MllpReader::new(rx, 1000);
        tx.write_all(&wire[..10]).await.unwrap();
        // Polled until it has taken the first piece and waits for more, then dropped.
        let cancelled =
            tokio::time::timeout(std::time::Duration::from_millis(20), reader.next()).await;
        assert!(cancelled.is_err(), "no message could be complete yet");
        tx.write_all(&wire[10..]).await.unwrap();
        drop(tx);
        assert_eq!(reader.next().await.unwrap().as_deref(), Some(A));
        assert_eq!(reader.next().await.unwrap().as_deref(), Some(B));
        assert!(reader.next().await.unwrap().is_none());
    }
}
