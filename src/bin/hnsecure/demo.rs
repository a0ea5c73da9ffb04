//! `hnsecure demo`: a sandbox in a temporary folder, the Volume 5 sample transactions
//! sent through the client core, each request and answer shown, and a timeout.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use hnapi::client::Client;
use hnapi::hl7::{self, Message, MessageBuilder, Path};
use hnapi::sandbox::{DEFAULT_FACILITY, Sandbox, SandboxOptions};

use crate::daemon;
use crate::output::Failure;

#[derive(Args)]
#[command(after_help = "Exit status 0 when every answer was as expected, 1 otherwise.")]
pub struct DemoArgs {
    /// Keep the temporary sandbox folder afterwards (its path is printed).
    #[arg(long)]
    keep: bool,
    /// Log level for the gateway's lines: error, warn, info, debug.
    #[arg(long, default_value = "warn")]
    log_level: log::LevelFilter,
}

const R02: &[u8] = include_bytes!("../../../tests/data/v5_2_5_3_request.hl7");
const R35: &[u8] = include_bytes!("../../../tests/data/v5_2_5_4_request.hl7");
const R46: &[u8] = include_bytes!("../../../tests/data/v5_2_5_5_request.hl7");
const R75: &[u8] = include_bytes!("../../../tests/data/v5_2_5_6_request.hl7");

/// Checks an answer: what it found, or why it is not as expected.
type Expectation = Box<dyn Fn(&Message<'_>) -> Result<String, String>>;

/// A request to send and what its answer must be.
struct Step {
    title: &'static str,
    request: Vec<u8>,
    timeout: Option<Duration>,
    expect: Expectation,
}

fn text(m: &Message<'_>, path: &str) -> String {
    path.parse::<Path>()
        .map(|p| m.value(&p).text().into_owned())
        .unwrap_or_default()
}

/// A Volume 5 example as this sandbox's facility sends it: its MSH-4, a new MSH-10.
fn from_example(example: &[u8], facility: &str) -> Vec<u8> {
    let msg = Message::parse(example).expect("the Volume 5 examples parse");
    let mut b = MessageBuilder::from_message(&msg);
    b.set(&Path::new(*b"MSH", 4), facility)
        .set(&Path::new(*b"MSH", 7), hl7::now_pacific())
        .set(&Path::new(*b"MSH", 10), hl7::new_control_id());
    b.to_bytes()
}

fn header(facility: &str, application: &str, kind: &str) -> String {
    format!(
        "MSH|^~\\&|DEMO|{facility}|{application}|BC0003000|{}|TRAIN96|{kind}|{}|D|2.3\r",
        hl7::now_pacific(),
        hl7::new_control_id()
    )
}

fn expect_msa(
    code: &'static str,
    text_starts: &'static str,
    from: Option<&'static str>,
) -> Expectation {
    Box::new(move |m| {
        let (msa1, msa3, msh3) = (text(m, "MSA-1"), text(m, "MSA-3"), text(m, "MSH-3"));
        if msa1 != code || !msa3.starts_with(text_starts) {
            return Err(format!("expected {code} {text_starts}…, got {msa1} {msa3}"));
        }
        if let Some(from) = from
            && msh3 != from
        {
            return Err(format!(
                "expected the answer from {from}, got it from {msh3}"
            ));
        }
        Ok(format!("{msa1} {msa3}"))
    })
}

pub fn run(args: DemoArgs) -> Result<(), Failure> {
    daemon::init_log(args.log_level);
    let facility = DEFAULT_FACILITY;
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "hnsecure-demo-{}-{}",
        std::process::id(),
        hl7::new_control_id()
    ));
    let runtime =
        daemon::runtime().map_err(|e| Failure::Input(Some(format!("cannot start: {e}"))))?;
    println!(
        "Starting a sandbox in {} (HNGard, a gateway, the simulator, facility {facility}) …",
        dir.display()
    );
    let options = SandboxOptions {
        dir: dir.clone(),
        port: 0,
        facility: facility.to_owned(),
        demo_server: false,
    };
    let mut sandbox = runtime
        .block_on(Sandbox::start(&options))
        .map_err(|e| Failure::Input(Some(e.to_string())))?;
    println!(
        "Gateway on {}; facility registered with a one-time code over TLS.\n\
         Each step shows a request, its answer, and ✓ when the answer is the one that step\n\
         expects, whatever its code (an AR can be the right answer), ✗ when it is not.\n",
        sandbox.addr()
    );

    let result = run_steps(&sandbox, facility);
    runtime.block_on(sandbox.stop());
    if args.keep {
        println!("\nThe sandbox stays in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn run_steps(sandbox: &Sandbox, facility: &str) -> Result<(), Failure> {
    let client = Client::open_file(&sandbox.client_config())
        .map_err(|e| Failure::Input(Some(e.to_string())))?;
    let mut failures = 0;

    // Record New Person first: the PHN it returns is used by Get Person.
    let record = Step {
        title: "R02 Record New Person (Volume 5, 2.5.3)",
        request: from_example(R02, facility),
        timeout: None,
        expect: Box::new(|m| {
            let phn = text(m, "PID-2.1");
            if text(m, "MSA-1") != "AA" || hl7::phn_error(phn.as_bytes()).is_some() {
                return Err(format!(
                    "expected AA with a valid PHN, got {} {phn:?}",
                    text(m, "MSA-1")
                ));
            }
            Ok(format!(
                "AA, new PHN {phn}, {} ERR confirmations",
                count(m, b"ERR")
            ))
        }),
    };
    let mut phn = String::new();
    failures += show(&client, 1, &record, Some(&mut phn));

    let steps = vec![
        Step {
            title: "R03 Get Person, by the PHN just made",
            request: format!(
                "{}PID||{phn}^^^BC^PH\r",
                header(facility, "RAIGT-PRSN-DMGR", "R03")
            )
            .into_bytes(),
            timeout: None,
            expect: Box::new(|m| {
                let surname = text(m, "PID-5.1");
                if text(m, "MSA-1") != "AA" || surname != "DONOGHUE" {
                    return Err(format!(
                        "expected AA for DONOGHUE, got {} {surname:?}",
                        text(m, "MSA-1")
                    ));
                }
                Ok(format!("AA, {surname}, born {}", text(m, "PID-7")))
            }),
        },
        Step {
            title: "R02 the same person again",
            request: from_example(R02, facility),
            timeout: None,
            expect: expect_msa("AE", "HNHR517E", None),
        },
        Step {
            title: "R35 End Payer Relationship (2.5.4)",
            request: from_example(R35, facility),
            timeout: None,
            expect: expect_msa("AA", "HJMB001I", None),
        },
        Step {
            title: "R46^Z26 Update Premium Payment Periods (2.5.5)",
            request: from_example(R46, facility),
            timeout: None,
            expect: expect_msa("AA", "HJMB001I", None),
        },
        Step {
            title: "R75^Z62 Override Pending Registration (2.5.6)",
            request: from_example(R75, facility),
            timeout: None,
            expect: Box::new(|m| {
                expect_msa("AA", "HJMB001I", None)(m)?;
                let msh9 = text(m, "MSH-9");
                if msh9 != "ACK^Z62" {
                    return Err(format!("expected MSH-9 ACK^Z62, got {msh9}"));
                }
                Ok(format!("AA, answered {msh9}"))
            }),
        },
        Step {
            title: "A reserved message type (ZPN, 2.4.9)",
            request: format!(
                "{}PID||{phn}^^^BC^PH\r",
                header(facility, "RAIGT-PRSN-DMGR", "ZPN")
            )
            .into_bytes(),
            timeout: None,
            expect: expect_msa("AR", "HNPS006E", Some("HNGATE")),
        },
        Step {
            title: "A receiving application that never answers (HNSIM-NORESPONSE), with a 3 s timeout",
            request: format!(
                "{}PID||{phn}^^^BC^PH\r",
                header(facility, "HNSIM-NORESPONSE", "R03")
            )
            .into_bytes(),
            timeout: Some(Duration::from_secs(3)),
            expect: expect_msa("AR", "TXFR024E", Some("HNGATE")),
        },
    ];
    let first = 2;
    for (i, step) in steps.into_iter().enumerate() {
        failures += show(&client, first + i, &step, None);
    }
    println!();
    println!(
        "Step 8 is answered in about 2.7 s, not 3: the gateway waits for a destination at most\n\
         the client's timeout less a tenth of it (at most 1 s), so that its own AR TXFR024E\n\
         reaches the client before the client would give up.\n\n\
         Next: keep a sandbox running and send your own messages to it:\n  \
         hnsecure sandbox --dir hnsecure-sandbox --port 0\n  \
         hnsecure send --config hnsecure-sandbox/client.toml examples/messages/*.hl7\n"
    );
    if failures == 0 {
        println!("All answers were as expected.");
        Ok(())
    } else {
        Err(Failure::Input(Some(format!(
            "{failures} answer(s) were not as expected"
        ))))
    }
}

fn count(m: &Message<'_>, id: &[u8]) -> usize {
    m.segments().filter(|s| s.id() == id).count()
}

fn print_segments(label: &str, bytes: &[u8]) {
    println!("   {label}");
    for segment in bytes
        .split(|&b| b == b'\r' || b == b'\n')
        .filter(|s| !s.is_empty())
    {
        println!("     {}", String::from_utf8_lossy(segment));
    }
}

/// Sends one step, shows it, and returns 1 when the answer was not as expected.
fn show(client: &Client, n: usize, step: &Step, phn: Option<&mut String>) -> usize {
    println!("{n}. {}", step.title);
    print_segments("request:", &step.request);
    let started = Instant::now();
    let answer = match client.send_receive(&step.request, step.timeout) {
        Ok(answer) => answer,
        Err(e) => {
            println!("   ✗ no answer: {e}\n");
            return 1;
        }
    };
    print_segments(
        &format!("answer ({} ms):", started.elapsed().as_millis()),
        &answer.bytes,
    );
    let verdict = Message::parse(&answer.bytes)
        .map_err(|e| format!("the answer is not HL7: {e}"))
        .and_then(|m| {
            if let Some(phn) = phn {
                *phn = text(&m, "PID-2.1");
            }
            (step.expect)(&m)
        });
    match verdict {
        Ok(what) => {
            println!("   ✓ {what}\n");
            0
        }
        Err(why) => {
            println!("   ✗ {why}\n");
            1
        }
    }
}
