//! `hnsecure hl7 …` run as a user runs it: the real binary, files and standard input.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use hnapi::hl7::Message;

fn data(name: &str) -> String {
    format!("{}/tests/data/{name}.hl7", env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hnsecure"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the hnsecure binary runs");
    let input = stdin.unwrap_or_default().to_vec();
    let mut pipe = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || pipe.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().ok();
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn get_prints_one_value_per_line() {
    let f = data("v5_2_4_11_ae_response");
    let o = run(
        &[
            "hl7",
            "get",
            &f,
            "MSH-10",
            "MSA-3",
            "ERR-1.4.1",
            "ERR-1.4.2",
            "PID-2",
            "MSH-1",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "1232418\nHNHR517EDUPLICATE CLIENT FOUND ON DATABASE - CLIENT NOT ADDED\nHNHR517E\n\
         DUPLICATE CLIENT FOUND ON DATABASE - CLIENT NOT ADDED\n\n|\n"
    );
}

#[test]
fn get_tells_null_from_absent_and_decodes_escapes() {
    let msg = b"MSH|^~\\&|A|B|C|D|1||R02|7|P|2.3\rPID|||\"\"|SMITH \\T\\ WESSON\r";
    let o = run(
        &["hl7", "get", "-", "PID-3", "PID-2", "PID-4", "ZZZ-1"],
        Some(msg),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "\"\"\n\nSMITH & WESSON\n\n");
}

#[test]
fn get_reads_every_message_of_a_file() {
    let two = [
        std::fs::read(data("v5_2_5_4_request")).unwrap(),
        std::fs::read(data("v5_2_5_5_request")).unwrap(),
    ]
    .concat();
    let o = run(&["hl7", "get", "-", "MSH-10", "PID-2.1"], Some(&two));
    assert_eq!(
        stdout(&o),
        "20010915000017\n9029274643\n19980915000020\n9076873472\n"
    );
}

#[test]
fn an_unreadable_message_fails_the_command_but_not_the_others() {
    let batch = b"MSH|^|BAD\rMSH|^~\\&|A|B|C|D|1||R02|7|P|2.3\r";
    let o = run(&["hl7", "get", "-", "MSH-10"], Some(batch));
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "7\n", "the readable message is still answered");
    let err = stderr(&o);
    assert!(
        err.contains(
            "standard input (message 1): the MSH segment at byte 0 declares unusable delimiters"
        ),
        "{err}"
    );

    let o = run(&["hl7", "ack", "-", "--code", "AA"], Some(batch));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        o.stdout.starts_with(b"MSH|"),
        "only the ACK of the readable message"
    );
    assert!(Message::parse(&o.stdout).is_ok());
}

#[test]
fn check_passes_valid_messages_and_fails_errors() {
    let o = run(&["hl7", "check", &data("v5_2_5_1_request")], None);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    assert!(
        stderr(&o).contains("1 message checked, 0 errors, 0 warnings"),
        "{}",
        stderr(&o)
    );

    // Warnings alone still pass.
    let o = run(&["hl7", "check", &data("v5_2_5_6_request")], None);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o).lines().count(), 3);
    assert!(
        stdout(&o).starts_with("warning MSH-3: lower-case"),
        "{}",
        stdout(&o)
    );

    let bad = b"MSH|^~\\&|A|B|C|D|1||ZPN|7|P|2.3\rPID||9865821575^^^BC^PH\r";
    let o = run(&["hl7", "check", "-"], Some(bad));
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains("error MSH-9: message type ZPN is reserved"),
        "{out}"
    );
    assert!(
        out.contains("error PID-2: the PHN check digit does not match"),
        "{out}"
    );
    assert!(!out.contains("9865821575"), "findings never show data");
}

#[test]
fn check_numbers_the_messages_of_a_batch() {
    let batch = b"MSH|^~\\&|A|B|C|D|1||R02|7|P|2.3\rMSH|^~\\&|A|B|C|D|1||R02||P|2.3\r";
    let o = run(&["hl7", "check", "-"], Some(batch));
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stdout(&o),
        "message 2: error MSH-10: message control id is required\n"
    );
}

#[test]
fn check_refuses_what_is_not_hl7() {
    let o = run(&["hl7", "check", "-"], Some(b"GET / HTTP/1.1\r\n"));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("does not start with an MSH segment"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn ack_answers_the_request() {
    let o = run(
        &[
            "hl7",
            "ack",
            &data("v5_2_5_3_request"),
            "--code",
            "AE",
            "--error",
            "HNHR517E",
            "--text",
            "DUPLICATE CLIENT FOUND ON DATABASE - CLIENT NOT ADDED",
            "--error",
            "HJMB001W",
            "--text",
            "SECOND",
            "--control-id",
            "1232418",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let ack = o.stdout;
    assert!(
        ack.ends_with(b"\r") && !ack.contains(&b'\n'),
        "exact HL7 bytes to a pipe"
    );
    let m = Message::parse(&ack).unwrap();
    let get = |p: &str| m.value(&p.parse().unwrap()).text().into_owned();
    assert_eq!(get("MSH-3"), "RAIRCRD-NW-PRSN");
    assert_eq!(get("MSH-5"), "ADT1");
    assert_eq!(get("MSH-10"), "1232418");
    assert_eq!(get("MSA-1"), "AE");
    assert_eq!(get("MSA-2"), "19980915000020");
    assert_eq!(
        get("MSA-3"),
        "HNHR517EDUPLICATE CLIENT FOUND ON DATABASE - CLIENT NOT ADDED"
    );
    assert_eq!(get("ERR[2]-1.4.1"), "HJMB001W");
    assert_eq!(get("ERR[2]-1.4.2"), "SECOND");
    let msh7 = get("MSH-7");
    assert!(msh7.ends_with("-0800") || msh7.ends_with("-0700"), "{msh7}");
}

#[test]
fn ack_makes_a_control_id_when_none_is_given() {
    let o = run(
        &["hl7", "ack", &data("v5_2_5_4_request"), "--code", "AA"],
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let m = Message::parse(&o.stdout).unwrap();
    let id = m.msh(10).text().into_owned();
    assert_eq!(id.len(), 20, "{id}");
    assert_eq!(m.value(&"MSA-3".parse().unwrap()).text(), "");
}

#[test]
fn usage_errors_exit_2_and_say_why() {
    let f = data("v5_2_5_4_request");
    let cases: &[(&[&str], &str)] = &[
        (&["hl7", "get", &f, "PID-0"], "expected a number"),
        (&["hl7", "get", &f], "<PATHS>"),
        (&["hl7", "ack", &f, "--code", "XX"], "AA, AE or AR"),
        (
            &["hl7", "ack", &f, "--code", "AE", "--error", "HNHR517"],
            "7 upper-case letters or digits",
        ),
        (
            &["hl7", "ack", &f, "--code", "AE", "--error", "HNHR517E"],
            "each --error needs one --text",
        ),
        (
            &[
                "hl7",
                "ack",
                &f,
                "--code",
                "AE",
                "--error",
                "HNHR517E",
                "--text",
                &"X".repeat(73),
            ],
            "at most 72",
        ),
        (
            &["hl7", "get", "/no/such/file.hl7", "MSH-10"],
            "cannot read /no/such/file.hl7",
        ),
        (&["hl7", "frobnicate"], "unrecognized subcommand"),
    ];
    for (args, says) in cases {
        let o = run(args, None);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn fmt_prints_segments_and_fields_for_people() {
    let f = data("v5_2_5_4_response");
    let o = run(&["hl7", "fmt", &f], None);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stdout(&o),
        "MSH|^~\\&|RAIEND-PYR-RL|BC0003000|HR|BC00000098|20030718130825|PM33283|R35|1232626|D|2.3\n\
         MSA|AA|20010915000017|HJMB001|SUCCESSFULLY COMPLETED\n\
         ERR|^HJMB001I&SUCCESSFULLY COMPLETED\n"
    );
    let o = run(
        &["hl7", "fmt", "--fields", &data("v5_2_5_3_response")],
        None,
    );
    let out = stdout(&o);
    assert!(out.contains("MSH-10       1232420\n"), "{out}");
    assert!(
        out.contains("ERR[3]-1     ^HJMB001I&SUCCESSFULLY COMPLETED\n"),
        "{out}"
    );
}

#[test]
fn help_explains_paths() {
    let o = run(&["hl7", "get", "--help"], None);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("ERR[3]-1.4.1"), "{}", stdout(&o));
}

#[test]
fn get_refuses_lower_case_and_malformed_paths_with_the_path_hint() {
    let f = data("v5_2_4_11_ae_response");
    for path in ["pid-3", "msh-10", "MSH10"] {
        let o = run(&["hl7", "get", &f, path], None);
        assert_eq!(o.status.code(), Some(2), "{path}: {}", stderr(&o));
        assert!(o.stdout.is_empty(), "{path}: {:?}", stdout(&o));
        assert!(
            stderr(&o).contains("paths look like SEG[n]-F[r].C.S"),
            "{path}: {}",
            stderr(&o)
        );
    }
}
