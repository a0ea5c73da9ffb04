//! Admission end to end (issue 13, DESIGN 3.7): hostile requests sent by a registered
//! facility through the real client core, TLS and gateway to an MLLP receiving system
//! that records every frame it reads. Every hostile request is answered with an AR from
//! HNGATE and journaled, and nothing of it reaches the receiver; every request that is
//! forwarded reaches it as one frame whose sender every parser reads as the facility.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::differential::Differential;
use common::{FACILITY, System, get, security_rows};
use hnapi::client::Client;
use hnapi::hl7::{Message, Path as HlPath};
use hnapi::xfer::mllp::{self, Decoder};

/// An MLLP receiving system that keeps every frame it reads, in order, and answers each
/// with an AA whose MSA-2 is the MSH-10 a naive reader finds.
struct Recorder {
    addr: SocketAddr,
    frames: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Recorder {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let frames = Arc::new(Mutex::new(Vec::new()));
        let kept = frames.clone();
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(mut tcp) = tcp else { return };
                let kept = kept.clone();
                std::thread::spawn(move || {
                    let mut decoder = Decoder::new(1 << 20);
                    let mut buf = vec![0u8; 65536];
                    loop {
                        let n = match tcp.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let mut rest = &buf[..n];
                        while let Ok(Some(frame)) = decoder.decode(&mut rest) {
                            let frame = frame.into_owned();
                            let control = naive_field(&frame, 10);
                            kept.lock().unwrap().push(frame);
                            let ack = format!(
                                "MSH|^~\\&|RCV|RCVFAC|HNWEB|{FACILITY}|20260101||ACK|A{control}|D|2.4\rMSA|AA|{control}\r"
                            );
                            let mut out = Vec::new();
                            mllp::encode(ack.as_bytes(), &mut out).unwrap();
                            if tcp.write_all(&out).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Self { addr, frames }
    }

    fn frames(&self) -> Vec<Vec<u8>> {
        self.frames.lock().unwrap().clone()
    }
}

/// Field `n` of the first line starting `MSH`, split on CR and `|` whatever MSH-1 says.
fn naive_field(frame: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(frame);
    text.split('\r')
        .find(|l| l.starts_with("MSH"))
        .and_then(|l| {
            l.split('|')
                .nth(n - 1 + usize::from(n == 1))
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

/// Every reader the test has of one forwarded frame: one MSH, the facility as sender.
fn assert_one_message_from_the_facility(frame: &[u8]) {
    let text = String::from_utf8_lossy(frame);
    let msg = Message::parse(frame).unwrap();
    assert_eq!(
        msg.segments().filter(|s| s.id() == b"MSH").count(),
        1,
        "{text:?}"
    );
    assert_eq!(
        msg.raw(&HlPath::new(*b"MSH", 4)),
        Some(FACILITY.as_bytes()),
        "{text:?}"
    );
    let lines: Vec<&str> = text.split(['\r', '\n']).filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("MSH")).count(),
        1,
        "naive: {text:?}"
    );
    assert_eq!(naive_field(frame, 4), FACILITY, "naive MSH-4: {text:?}");
    assert!(!frame.contains(&b'\n'), "segments end with CR: {text:?}");
}

fn gate_toml(addr: SocketAddr) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\ngard = \"gard\"\nfacility = \"HNGATE01\"\n\
         [[route]]\napplication = \"LAB\"\ndestination = \"mllp://{addr}\"\ntimeout_secs = 2\npool_size = 1\n"
    )
}

/// A well-formed request from the facility to LAB with this control id.
fn good(control: &str) -> String {
    format!(
        "MSH|^~\\&|HNWEB|{FACILITY}|LAB|BC00001013|20260101120000|TRAIN|R03|{control}|D|2.4\rPID||9012372173^^^BC^PH\r"
    )
}

/// The hostile requests of the adversarial review and more: (name, bytes, the code of
/// HNGATE's AR, the journal's security code).
fn hostile() -> Vec<(&'static str, Vec<u8>, &'static str, &'static str)> {
    let spoof = |control: &str| {
        format!(
            "MSH|^~\\&|HNWEB|BC00000099|LAB|BC00001013|20260101120000|TRAIN|R03|{control}|D|2.4\rPID||1\r"
        )
    };
    let with_msh4 = |msh4: &str, control: &str| {
        format!("MSH|^~\\&|HNWEB|{msh4}|LAB|BC00001013|20260101120000|TRAIN|R03|{control}|D|2.4\rPID||1\r")
            .into_bytes()
    };
    let mut cases = vec![
        (
            "an MLLP frame end and a second message",
            format!("{}\x1c\r\x0b{}", good("H01"), spoof("SPOOF77")).into_bytes(),
            "HNPS010E",
            "control-bytes",
        ),
        (
            "a frame start inside",
            format!("{}\x0b{}", good("H02"), spoof("SPOOF78")).into_bytes(),
            "HNPS010E",
            "control-bytes",
        ),
        (
            "a NUL",
            good("H03").replace("PID||", "PID|\0|").into_bytes(),
            "HNPS010E",
            "control-bytes",
        ),
        (
            "NEL, a line end to some readers",
            good("H04")
                .replace("PID||", &format!("PID||\u{85}{}", spoof("SPOOF79")))
                .into_bytes(),
            "HNPS010E",
            "control-bytes",
        ),
        (
            "U+2028",
            good("H05").replace("PID||", "PID||\u{2028}").into_bytes(),
            "HNPS010E",
            "control-bytes",
        ),
        (
            "a second MSH",
            format!("{}{}", good("H06"), spoof("SPOOF80")).into_bytes(),
            "HNPS012E",
            "smuggling",
        ),
        (
            "a second MSH after LF",
            format!("{}\n{}", good("H07").trim_end(), spoof("SPOOF81")).into_bytes(),
            "HNPS012E",
            "smuggling",
        ),
        (
            "a batch header",
            format!("{}BHS|^~\\&|HNWEB|BC00000099\r", good("H08")).into_bytes(),
            "HNPS012E",
            "smuggling",
        ),
        (
            "a batch trailer",
            format!("{}BTS|1\r", good("H09")).into_bytes(),
            "HNPS012E",
            "smuggling",
        ),
        (
            "an indented MSH",
            format!(
                "{} MSH|^~\\&|HNWEB|BC00000099|LAB|F|1||R03|SPOOF82|D|2.4\r",
                good("H10")
            )
            .into_bytes(),
            "HNPS012E",
            "smuggling",
        ),
        (
            "swapped delimiters",
            format!(
                "MSH^|~\\&^HNWEB^{FACILITY}|X|BC00000099^LAB^BC00001013^20260101^^R03^H11^D^2.4\r"
            )
            .into_bytes(),
            "HNPS011E",
            "delimiters",
        ),
        (
            "other delimiters",
            format!("MSH#^~\\&#HNWEB#{FACILITY}#LAB#BC00001013#20260101##R03#H12#D#2.4\r")
                .into_bytes(),
            "HNPS011E",
            "delimiters",
        ),
        (
            "MSH-4 with components",
            with_msh4(&format!("{FACILITY}^BC00000099^L"), "H13"),
            "VLDT008E",
            "msh4-mismatch",
        ),
        (
            "MSH-4 with repetitions",
            with_msh4(&format!("{FACILITY}~BC00000099"), "H14"),
            "VLDT008E",
            "msh4-mismatch",
        ),
        (
            "MSH-4 escaped",
            with_msh4("BC0000009\\X38\\", "H15"),
            "VLDT008E",
            "msh4-mismatch",
        ),
        (
            "another facility",
            with_msh4("BC00000099", "H16"),
            "VLDT008E",
            "msh4-mismatch",
        ),
    ];
    // Each control byte on its own.
    for b in (0x00u8..0x20)
        .filter(|b| !matches!(b, b'\t' | b'\n' | b'\r'))
        .chain([0x7F])
    {
        let mut m = good("HC").into_bytes();
        m.insert(60, b);
        cases.push(("a control byte", m, "HNPS010E", "control-bytes"));
    }
    cases
}

#[test]
fn hostile_requests_are_refused_journaled_and_never_forwarded() {
    let recorder = Recorder::start();
    let system = System::start_with("admission", Some(&gate_toml(recorder.addr)));
    let client = Client::open_file(&system.client_config()).unwrap();

    let cases = hostile();
    for (name, bytes, code, _) in &cases {
        let answer = client.send_receive(bytes, None).unwrap().bytes;
        let text = String::from_utf8_lossy(&answer);
        assert_eq!(get(&answer, "MSH-3"), "HNGATE", "{name}: {text}");
        assert_eq!(get(&answer, "MSA-1"), "AR", "{name}: {text}");
        assert!(
            get(&answer, "MSA-3").starts_with(code),
            "{name}: expected {code}, got {text}"
        );
        // Nothing in the gateway's answer that an MLLP reader would take for framing.
        assert!(
            !answer.iter().any(|&b| b == 0x0B || b == 0x1C),
            "{name}: {text:?}"
        );
    }
    // A request forwarded afterwards is the receiver's first frame: nothing hostile
    // reached it before.
    let answer = client
        .send_receive(good("AFTER").as_bytes(), None)
        .unwrap()
        .bytes;
    assert_eq!(
        get(&answer, "MSA-1"),
        "AA",
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(get(&answer, "MSA-2"), "AFTER");
    let frames = recorder.frames();
    assert_eq!(
        frames.len(),
        1,
        "only the good request reached the receiver: {frames:?}"
    );
    assert_one_message_from_the_facility(&frames[0]);

    // Each refusal has its security row (and its transaction row, as every request has).
    for event in ["control-bytes", "smuggling", "delimiters", "msh4-mismatch"] {
        let n = cases.iter().filter(|c| c.3 == event).count();
        let rows = security_rows(&system.gard_dir(), n, |r| r.code == event);
        assert!(rows.iter().all(|r| r.facility == FACILITY), "{rows:#?}");
        if event == "msh4-mismatch" {
            // The row names the request by its control id (never its content).
            assert!(
                rows.iter().any(|r| r.detail.contains("control id H13")),
                "{rows:#?}"
            );
        }
        assert!(
            rows.iter().all(|r| !r.detail.contains("9012372173")),
            "no message text in the journal: {rows:#?}"
        );
    }
}

#[test]
fn forwarded_requests_are_canonical_and_read_alike() {
    let recorder = Recorder::start();
    let system = System::start_with("admission-ok", Some(&gate_toml(recorder.addr)));
    let client = Client::open_file(&system.client_config()).unwrap();
    let variants = [
        good("OK1"),
        good("OK2").replace('\r', "\n"),
        good("OK3").replace('\r', "\r\n"),
        good("OK4").trim_end().to_owned(),
        good("OK5").replace("PID||", "PID|\t|"),
        good("OK6").replace("PID||", "PID|Gagné^Zoë|"),
        format!("\r\n{}\r\r", good("OK7")),
    ];
    for (i, v) in variants.iter().enumerate() {
        let answer = client.send_receive(v.as_bytes(), None).unwrap().bytes;
        assert_eq!(
            get(&answer, "MSA-1"),
            "AA",
            "{v:?}: {}",
            String::from_utf8_lossy(&answer)
        );
        assert_eq!(get(&answer, "MSA-2"), format!("OK{}", i + 1));
    }
    let frames = recorder.frames();
    assert_eq!(frames.len(), variants.len());
    for (frame, v) in frames.iter().zip(&variants) {
        assert_one_message_from_the_facility(frame);
        assert!(frame.ends_with(b"\r") && !frame.windows(2).any(|w| w == b"\r\r"));
        // The segments are the ones sent, nothing else changed.
        let sent: Vec<&str> = v.split(['\r', '\n']).filter(|l| !l.is_empty()).collect();
        let got = String::from_utf8(frame.clone()).unwrap();
        let got: Vec<&str> = got.split('\r').filter(|l| !l.is_empty()).collect();
        assert_eq!(got, sent);
    }
}

/// The differential: the same hostile and well-formed requests through the gateway to a
/// receiving system that reads every frame with python-hl7, hl7apy and a naive split.
/// Only the well-formed ones arrive, one frame each, and all three parsers read one MSH
/// and the facility as the whole MSH-4 and as its first component.
#[test]
fn every_parser_at_the_receiver_reads_one_message_from_the_facility() {
    let receiver = Differential::start();
    let system = System::start_with("admission-diff", Some(&gate_toml(receiver.addr())));
    let client = Client::open_file(&system.client_config()).unwrap();
    let mut forwarded = Vec::new();
    for (i, (name, bytes, _, _)) in hostile().iter().enumerate() {
        let answer = client.send_receive(bytes, None).unwrap().bytes;
        assert_eq!(get(&answer, "MSA-1"), "AR", "{name}");
        // Between hostile requests, a well-formed one.
        let control = format!("D{i}");
        let answer = client
            .send_receive(good(&control).as_bytes(), None)
            .unwrap()
            .bytes;
        assert_eq!(
            get(&answer, "MSA-2"),
            control,
            "{}",
            String::from_utf8_lossy(&answer)
        );
        forwarded.push(control);
    }
    let records = receiver.wait_for(forwarded.len(), Duration::from_secs(10));
    assert_eq!(
        records.len(),
        forwarded.len(),
        "only the well-formed requests arrived: {records:#?}"
    );
    for (record, control) in records.iter().zip(&forwarded) {
        let reading = record
            .agreed()
            .unwrap_or_else(|| panic!("the parsers disagree on {control}: {record:#?}"));
        assert_eq!(reading.msh_count, Some(1), "{record:#?}");
        assert_eq!(reading.msh4.as_deref(), Some(FACILITY), "{record:#?}");
        assert_eq!(reading.msh4_1.as_deref(), Some(FACILITY), "{record:#?}");
        assert_eq!(
            reading.msh10.as_deref(),
            Some(control.as_str()),
            "{record:#?}"
        );
        assert_eq!(record.skipped, 0, "no bytes outside frames: {record:#?}");
    }
}
