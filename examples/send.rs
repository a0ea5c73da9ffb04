//! Send one HL7 message file through hnsecure and print the answer — the Rust API.
//!
//! `cargo run --example send -- client.toml request.hl7`
//!
//! The answer is written exactly as received (CR segment ends); exit status 0 when an
//! HL7 answer came back (the receiver's or a network ACK from HNAPI).
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use hnapi::client::Client;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, config, file] = args.as_slice() else {
        eprintln!("usage: send CLIENT_TOML MESSAGE_FILE");
        return ExitCode::from(2);
    };
    let message = match std::fs::read(file) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{file}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let client = match Client::open_file(Path::new(config)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match client.send_receive(&message, None) {
        Ok(answer) => {
            if let Some(code) = answer.network_error {
                eprintln!("(a network ACK from HNAPI: {})", code.code());
            }
            let _ = std::io::stdout().write_all(&answer.bytes);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
