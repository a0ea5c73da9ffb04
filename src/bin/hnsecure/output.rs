//! What every subcommand shares: reading input files, writing output, exit codes.

use std::io::{self, IsTerminal, Read, Write};
use std::process::ExitCode;

/// How a subcommand ended, beyond success.
pub enum Failure {
    /// The command line asks for something impossible (exit 2), with the reason.
    Usage(String),
    /// The input is bad or the check failed (exit 1); the reason is already printed or given.
    Input(Option<String>),
    /// Writing the output failed.
    Io(io::Error),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Turns a subcommand's result into the process exit code, printing the reason.
pub fn finish(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(why)) => {
            eprintln!("error: {why}");
            eprintln!("\nFor more information, try '--help'.");
            ExitCode::from(2)
        }
        Err(Failure::Input(why)) => {
            if let Some(why) = why {
                eprintln!("error: {why}");
            }
            ExitCode::from(1)
        }
        // A closed pipe (`| head`) is the reader's choice, not a failure.
        Err(Failure::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(Failure::Io(e)) => {
            eprintln!("error: cannot write the output: {e}");
            ExitCode::from(1)
        }
    }
}

/// The bytes of FILE, or of standard input when FILE is `-`.
pub fn read_input(file: &str) -> Result<Vec<u8>, Failure> {
    let mut bytes = Vec::new();
    let result = if file == "-" {
        io::stdin().lock().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::File::open(file)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map(|_| ())
    };
    result.map_err(|e| {
        let name = if file == "-" { "standard input" } else { file };
        Failure::Usage(format!("cannot read {name}: {e}"))
    })?;
    Ok(bytes)
}

/// Writes an HL7 message: exactly its bytes to a pipe or file, and with each CR shown
/// as a line break on a terminal, where a bare CR would overwrite the line before.
pub fn write_message(out: &mut impl Write, message: &[u8]) -> io::Result<()> {
    if io::stdout().is_terminal() {
        let shown: Vec<u8> = message
            .iter()
            .map(|&b| if b == b'\r' { b'\n' } else { b })
            .collect();
        out.write_all(&shown)
    } else {
        out.write_all(message)
    }
}
