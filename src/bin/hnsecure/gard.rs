//! `hnsecure gard …`: administer the HNGard directory — facilities, their one-time
//! registration codes, revocation — while a gateway may be using the same directory.
//!
//! Output convention: what a script wants (the registration code of `add` and `code`) is
//! alone on standard output; explanations for people go to standard error. Times are
//! shown in Pacific time.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use hnapi::gard::{
    self, AuditFilter, AuditKind, AuditRecord, CodeInfo, DIRECTORY_FILES, Facility, Gard,
    GardError, InitOptions, Role, Status, StoreConfig,
};
use hnapi::hl7::pacific;
use jiff::{Span, Timestamp, ZonedDateTime};

use crate::output::Failure;

/// The environment variable naming the directory when `--dir` is not given.
const DIR_ENV: &str = "HNSECURE_GARD_DIR";

#[derive(Args)]
pub struct GardArgs {
    /// The HNGard directory (default: the environment variable HNSECURE_GARD_DIR).
    #[arg(long, value_name = "DIR", global = true)]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    command: GardCommand,
}

#[derive(Subcommand)]
enum GardCommand {
    /// Create the directory: its CA, the gateway's TLS certificate, the storage key and the
    /// database. Never overwrites an existing directory.
    #[command(after_help = "Several gateways sharing one directory: \
        hnsecure gard init --dir DIR --store postgres://hngard@db.example:5432/hngard\n\
        then copy DIR (its key files and gard.toml) to each gateway. The password comes from \
        --password-file (a file of mode 0600, kept where gard.toml names it) or PGPASSWORD.")]
    Init {
        /// Another DNS name or IP address of the gateway for its certificate (repeatable);
        /// localhost, 127.0.0.1 and ::1 are always included.
        #[arg(long = "san", value_name = "NAME")]
        sans: Vec<String>,
        /// Keep the records in this PostgreSQL database instead of DIR/gard.db:
        /// postgres://USER@HOST:PORT/DBNAME, without a password. Written to DIR/gard.toml.
        #[arg(long, value_name = "URL")]
        store: Option<String>,
        /// The file holding the PostgreSQL password (mode 0600); a relative path is taken
        /// from DIR. Without it, the password comes from PGPASSWORD, if set.
        #[arg(long, value_name = "FILE", requires = "store")]
        password_file: Option<PathBuf>,
    },
    /// Record a facility and print its one-time registration code (alone on standard output).
    #[command(after_help = "Examples:\n  \
        hnsecure gard --dir /var/lib/hnsecure/gard add BC00000098 --name 'Royal Jubilee Lab' > code.txt\n  \
        hnsecure gard add BC00000099 --name 'Lab results service' --role server --serves HNAPI-LAB HNAPI-LAB2\n\n\
        --serves takes one or more names, space separated or with --serves repeated; put it after\n\
        the facility id (or end its names with --).")]
    Add {
        /// The facility id: 1 to 32 characters A-Z, 0-9 and -, as in MSH-4 of its messages.
        #[arg(value_parser = parse_id)]
        id: String,
        /// A name for people (1 to 100 printable characters).
        #[arg(long, value_parser = parse_name)]
        name: String,
        /// server: a receiving application that may also serve requests.
        #[arg(long, value_enum, default_value_t = RoleArg::Client)]
        role: RoleArg,
        /// The receiving-application names (MSH-5) a server facility may serve: one or
        /// more, space separated or repeated; only with --role server.
        #[arg(long, value_name = "NAME", num_args = 1.., action = clap::ArgAction::Append, value_parser = parse_application)]
        serves: Vec<String>,
        /// Days the code stays valid.
        #[arg(long, value_name = "N", default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=365))]
        code_days: u32,
    },
    /// Set the receiving-application names (MSH-5) a server facility may serve, replacing
    /// the names it had. A gateway refuses an application that asks to serve any other name.
    #[command(after_help = "Examples:\n  \
        hnsecure gard serves BC00000099 HNAPI-LAB HNAPI-LAB2\n  \
        hnsecure gard serves BC00000099 --none\n\n\
        A name is 1 to 64 printable ASCII characters without | ^ ~ \\ & (nor a leading or\n\
        trailing space), matched exactly against MSH-5. The change is journaled (gard audit).")]
    Serves {
        /// The facility id (a server).
        #[arg(value_parser = parse_id)]
        id: String,
        /// The names, one or more.
        #[arg(value_name = "NAME", required_unless_present = "none", value_parser = parse_application)]
        names: Vec<String>,
        /// Serve no name at all.
        #[arg(long, conflicts_with = "names")]
        none: bool,
    },
    /// Print a new one-time registration code for an existing facility, replacing any
    /// earlier code. Registering with it rotates the facility's certificate and envelope key.
    #[command(
        after_help = "Example (the code alone on standard output, into a file to hand over):\n  \
        hnsecure gard --dir /var/lib/hnsecure/gard code BC00000098 --code-days 3 > code.txt"
    )]
    Code {
        /// The facility id.
        #[arg(value_parser = parse_id)]
        id: String,
        /// Days the code stays valid.
        #[arg(long, value_name = "N", default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=365))]
        code_days: u32,
    },
    /// List the facilities, one per line.
    #[command(after_help = "Example:\n  hnsecure gard --dir /var/lib/hnsecure/gard list")]
    List,
    /// Show the details of one facility.
    #[command(
        after_help = "Example:\n  hnsecure gard --dir /var/lib/hnsecure/gard show BC00000098"
    )]
    Show {
        /// The facility id.
        #[arg(value_parser = parse_id)]
        id: String,
    },
    /// Issue a new certificate for a registered facility from its certificate signing
    /// request, before the current one expires and without a new registration (the
    /// envelope key stays; the old certificate is refused for new connections).
    #[command(
        after_help = "Facilities renew online with `hnsecure client renew --config client.toml`;\n\
this is for a facility that sent its CSR (PEM or DER) another way. Give it the certificate\n\
printed (or written to --out), to put in its credential file in place of the old one."
    )]
    Renew {
        /// The facility id.
        #[arg(value_parser = parse_id)]
        id: String,
        /// The facility's certificate signing request (PEM or DER).
        #[arg(long, value_name = "FILE")]
        csr: PathBuf,
        /// Write the certificate (PEM) here instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Revoke a facility, for good: new connections with its certificate are refused at once.
    #[command(
        after_help = "Example:\n  hnsecure gard --dir /var/lib/hnsecure/gard revoke BC00000098\n\
        Revocation is final: the facility cannot register again under this id."
    )]
    Revoke {
        /// The facility id.
        #[arg(value_parser = parse_id)]
        id: String,
    },
    /// Print the gateway's audit journal, oldest first: transactions and security events
    /// (never a message body). Times are in Pacific time.
    #[command(after_help = "Examples:\n  \
        hnsecure gard audit --since 2h --outcome AR\n  \
        hnsecure gard audit --since 2026-11-23T10:00:00-08:00 --facility BC00000098 --tsv")]
    Audit(AuditArgs),
}

#[derive(Args)]
struct AuditArgs {
    /// Only records from this time on: a time such as 2026-11-23T10:00:00-08:00 (without an
    /// offset it is Pacific time), or a span back from now such as 30m, 2h or 7d.
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    since: Option<Timestamp>,
    /// Only records of this facility.
    #[arg(long, value_name = "ID", value_parser = parse_id)]
    facility: Option<String>,
    /// Only records with this outcome: the answer's MSA-1, or refused for security events.
    #[arg(long, value_parser = ["AA", "AE", "AR", "refused"])]
    outcome: Option<String>,
    /// Only transactions or only security events.
    #[arg(long, value_enum)]
    kind: Option<KindArg>,
    /// Only the newest N records.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    limit: Option<u32>,
    /// Tab-separated lines with a header, for scripts (times to the microsecond).
    #[arg(long)]
    tsv: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum KindArg {
    Transaction,
    Security,
}

impl From<KindArg> for AuditKind {
    fn from(kind: KindArg) -> Self {
        match kind {
            KindArg::Transaction => AuditKind::Transaction,
            KindArg::Security => AuditKind::Security,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Client,
    Server,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Client => Role::Client,
            RoleArg::Server => Role::Server,
        }
    }
}

fn parse_id(s: &str) -> Result<String, String> {
    gard::check_facility_id(s)
        .map(|()| s.to_owned())
        .map_err(|e| e.to_string())
}

/// `--since`: a time with an offset (RFC 3339 / ISO 8601), a date or date and time in
/// Pacific time, or a span back from now (`30m`, `2h`, `7d`, `1d 12h`, `P7D`). Days are
/// calendar days in Pacific time.
fn parse_since(s: &str) -> Result<Timestamp, String> {
    let s = s.trim();
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    if let Ok(civil) = s.parse::<jiff::civil::DateTime>() {
        return civil
            .to_zoned_datetime(pacific().clone())
            .map(|z| z.timestamp())
            .map_err(|e| format!("{s:?} is not a time in Pacific time: {e}"));
    }
    match s.parse::<Span>() {
        Ok(span) if span.is_negative() => Err(format!(
            "{s:?} is a negative span; give how far back to go, such as 2h"
        )),
        Ok(span) => ZonedDateTime::now()
            .with_time_zone(pacific().clone())
            .checked_sub(span)
            .map(|z| z.timestamp())
            .map_err(|e| format!("{s:?} reaches too far back: {e}")),
        Err(_) => Err(format!(
            "{s:?} is neither a time such as 2026-11-23T10:00:00-08:00 \
             nor a span such as 30m, 2h or 7d"
        )),
    }
}

fn parse_application(s: &str) -> Result<String, String> {
    gard::check_application_name(s)
        .map(|()| s.to_owned())
        .map_err(|e| e.to_string())
}

fn parse_name(s: &str) -> Result<String, String> {
    gard::check_facility_name(s)
        .map(|()| s.to_owned())
        .map_err(|e| e.to_string())
}

pub fn run(args: GardArgs) -> Result<(), Failure> {
    let dir = match args.dir {
        Some(dir) => dir,
        None => match std::env::var_os(DIR_ENV) {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => {
                return Err(Failure::Usage(format!(
                    "the HNGard directory is not given: use --dir DIR or set {DIR_ENV}"
                )));
            }
        },
    };
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match args.command {
        GardCommand::Init {
            sans,
            store,
            password_file,
        } => {
            let store = match store {
                None => StoreConfig::Sqlite,
                Some(url) => StoreConfig::new(&url, password_file).map_err(Failure::Usage)?,
            };
            init(&dir, sans, &store, &mut out)
        }
        GardCommand::Add {
            id,
            name,
            role,
            serves,
            code_days,
        } => {
            let role = Role::from(role);
            if role == Role::Client && !serves.is_empty() {
                return Err(Failure::Usage(
                    "--serves is only for a server facility: give --role server \
                     (a client facility serves no receiving application)"
                        .into(),
                ));
            }
            add(&open(&dir)?, &id, &name, role, &serves, code_days, &mut out)
        }
        GardCommand::Serves { id, names, none } => {
            let names = if none { Vec::new() } else { names };
            serves(&open(&dir)?, &id, &names, &mut out)
        }
        GardCommand::Code { id, code_days } => code(&open(&dir)?, &id, code_days, &mut out),
        GardCommand::List => list(&open(&dir)?, &mut out),
        GardCommand::Show { id } => show(&open(&dir)?, &id, &mut out),
        GardCommand::Revoke { id } => revoke(&open(&dir)?, &id, &mut out),
        GardCommand::Renew { id, csr, out: file } => {
            renew(&open(&dir)?, &id, &csr, file.as_deref(), &mut out)
        }
        GardCommand::Audit(args) => audit(&open(&dir)?, args, &mut out),
    }?;
    out.flush()?;
    Ok(())
}

fn open(dir: &Path) -> Result<Gard, Failure> {
    Gard::open(dir).map_err(failure)
}

/// Bad input on the command line is a usage error (exit 2); anything the directory
/// refuses or cannot do is exit 1.
fn failure(e: GardError) -> Failure {
    match e {
        GardError::InvalidFacilityId(_)
        | GardError::InvalidName
        | GardError::InvalidApplicationName(_)
        | GardError::TooManyApplications(_)
        | GardError::ServesForClient(_)
        | GardError::InvalidSubjectAltName(_) => Failure::Usage(e.to_string()),
        _ => Failure::Input(Some(e.to_string())),
    }
}

fn unknown(gard: &Gard, id: &str) -> Failure {
    Failure::Input(Some(format!(
        "there is no facility {id} in {}; `{}` shows them all",
        gard.dir().display(),
        hint(gard, "list")
    )))
}

/// A `hnsecure gard` command for this directory that works as printed, whichever way
/// the directory was given (`--dir` or HNSECURE_GARD_DIR).
fn hint(gard: &Gard, rest: &str) -> String {
    format!("hnsecure gard --dir {} {rest}", shell_word(gard.dir()))
}

/// `path` as one shell word: bare when it is plain, else in single quotes.
fn shell_word(path: &Path) -> String {
    let text = path.display().to_string();
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+,:@".contains(&b))
    {
        text
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

fn days(n: u32) -> Duration {
    Duration::from_secs(u64::from(n) * 24 * 3600)
}

/// A time for people, in Pacific time: `2025-06-01 10:15 PDT`.
fn when(t: Timestamp) -> String {
    match t.in_tz("America/Vancouver") {
        Ok(zoned) => zoned.strftime("%Y-%m-%d %H:%M %Z").to_string(),
        Err(_) => t.strftime("%Y-%m-%d %H:%M UTC").to_string(),
    }
}

/// A date for the list, in Pacific time: `2025-06-01`, or `-`.
fn date(t: Option<Timestamp>) -> String {
    match t {
        None => "-".to_owned(),
        Some(t) => match t.in_tz("America/Vancouver") {
            Ok(zoned) => zoned.strftime("%Y-%m-%d").to_string(),
            Err(_) => t.strftime("%Y-%m-%d").to_string(),
        },
    }
}

fn init(
    dir: &Path,
    sans: Vec<String>,
    store: &StoreConfig,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let gard = Gard::init_with_store(
        dir,
        &InitOptions {
            subject_alt_names: sans.clone(),
        },
        store,
    )
    .map_err(failure)?;
    let fingerprint = gard.ca_fingerprint().map_err(failure)?;
    writeln!(out, "Initialised the HNGard directory {}:", dir.display())?;
    let files: Vec<(&str, &str)> = DIRECTORY_FILES
        .iter()
        .map(|&(name, what)| match store {
            StoreConfig::Postgres { .. } if name == "gard.db" => (
                gard::CONFIG_FILE,
                "names the PostgreSQL database that holds the records",
            ),
            StoreConfig::Postgres { .. } if name == "storage.key" => {
                (name, "the key that seals envelope keys in the database")
            }
            _ => (name, what),
        })
        .collect();
    let width = files
        .iter()
        .map(|(name, _)| dir.join(name).display().to_string().len())
        .max()
        .unwrap_or(0);
    for (name, what) in files {
        let path = dir.join(name).display().to_string();
        writeln!(out, "  {path:width$}  {what}")?;
    }
    if let StoreConfig::Postgres { url, .. } = store {
        writeln!(out, "The records are in the PostgreSQL database {url}.")?;
        writeln!(
            out,
            "Another gateway shares them with a copy of this directory (every file above)."
        )?;
    }
    let mut names = vec!["localhost", "127.0.0.1", "::1"];
    names.extend(sans.iter().map(String::as_str));
    writeln!(
        out,
        "The gateway's certificate names: {}.",
        names.join(", ")
    )?;
    writeln!(out, "CA certificate fingerprint (SHA-256):")?;
    writeln!(out, "  {fingerprint}")?;
    Ok(())
}

fn code_expiry(gard: &Gard, id: &str) -> Result<String, Failure> {
    Ok(match gard.code_info(id).map_err(failure)? {
        Some(CodeInfo { expires_at, .. }) => when(expires_at),
        None => "its expiry".to_owned(),
    })
}

fn handover(gard: &Gard, id: &str) -> Result<String, Failure> {
    let ca = gard.dir().join("ca.pem");
    let fingerprint = gard.ca_fingerprint().map_err(failure)?;
    Ok(format!(
        "Give it to the facility with the CA certificate {} (SHA-256 {fingerprint}).\n\
         Its client then registers with the code saved in code.txt (or --code-file - to type or\n\
         pipe it), which keeps it off the command line; HOST:PORT is the gateway's address:\n  \
         hnsecure client register --gate HOST:PORT --facility {id} --code-file code.txt --ca {} --out credential.toml",
        ca.display(),
        shell_word(&ca)
    ))
}

fn add(
    gard: &Gard,
    id: &str,
    name: &str,
    role: Role,
    serves: &[String],
    code_days: u32,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let code = match gard.add_facility_serving(id, name, role, serves, days(code_days)) {
        Ok(code) => code,
        Err(GardError::FacilityExists(_)) => {
            return Err(Failure::Input(Some(format!(
                "facility {id} already exists; to give it a new registration code, \
                 run `{}`",
                hint(gard, &format!("code {id} > code.txt"))
            ))));
        }
        Err(e) => return Err(failure(e)),
    };
    writeln!(out, "{code}")?;
    out.flush()?;
    eprintln!("Added facility {id} ({name}, {role}); it is pending until it registers.");
    if role == Role::Server {
        match gard.facility(id).map_err(failure)? {
            Some(f) if !f.serves.is_empty() => {
                eprintln!("It may serve {}.", names_for_people(&f.serves));
                warn_shared(gard, id, &f.serves)?;
            }
            _ => eprintln!(
                "It serves no receiving application yet: give it names with \
                 `{}` (NAME… being the receiving applications).",
                hint(gard, &format!("serves {id} NAME…"))
            ),
        }
    }
    eprintln!(
        "This registration code works once, until {}.",
        code_expiry(gard, id)?
    );
    eprintln!("{}", handover(gard, id)?);
    Ok(())
}

fn code(gard: &Gard, id: &str, code_days: u32, out: &mut impl Write) -> Result<(), Failure> {
    let code = match gard.new_code(id, days(code_days)) {
        Ok(code) => code,
        Err(GardError::UnknownFacility(_)) => return Err(unknown(gard, id)),
        Err(GardError::FacilityRevoked(_)) => {
            return Err(Failure::Input(Some(format!(
                "facility {id} is revoked, and revocation is final: it cannot register again"
            ))));
        }
        Err(e) => return Err(failure(e)),
    };
    writeln!(out, "{code}")?;
    out.flush()?;
    eprintln!(
        "New registration code for facility {id}: it replaces any earlier code and works once, until {}.",
        code_expiry(gard, id)?
    );
    eprintln!(
        "Registering with it gives the facility a new certificate and envelope key; \
         the current ones keep working until then."
    );
    eprintln!("{}", handover(gard, id)?);
    Ok(())
}

/// Names for people, `HNAPI-DEMO, "TWO WORDS"`: a name with a space or comma is quoted.
fn names_for_people(names: &[String]) -> String {
    names
        .iter()
        .map(|n| {
            if n.contains([' ', ',', '"']) {
                format!("{n:?}")
            } else {
                n.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Warns (standard error) about names another facility also serves.
fn warn_shared(gard: &Gard, id: &str, names: &[String]) -> Result<(), Failure> {
    for other in gard.facilities().map_err(failure)? {
        if other.id == id || other.status == Status::Revoked {
            continue;
        }
        let shared: Vec<String> = names
            .iter()
            .filter(|n| other.serves.contains(n))
            .cloned()
            .collect();
        if !shared.is_empty() {
            eprintln!(
                "Note: facility {} also serves {}.",
                other.id,
                names_for_people(&shared)
            );
        }
    }
    Ok(())
}

fn serves(gard: &Gard, id: &str, names: &[String], out: &mut impl Write) -> Result<(), Failure> {
    let Some(before) = gard.facility(id).map_err(failure)? else {
        return Err(unknown(gard, id));
    };
    match gard.set_serves(id, names) {
        Ok(()) => {}
        Err(GardError::UnknownFacility(_)) => return Err(unknown(gard, id)),
        Err(GardError::NotAServer(_)) => {
            return Err(Failure::Input(Some(format!(
                "facility {id} has the role client, which serves no receiving application; \
                 a server facility is added with `{}`",
                hint(gard, "add ID --name NAME --role server")
            ))));
        }
        Err(GardError::FacilityRevoked(_)) => {
            return Err(Failure::Input(Some(format!(
                "facility {id} is revoked, and revocation is final: it serves nothing"
            ))));
        }
        Err(e) => return Err(failure(e)),
    }
    let after = gard
        .facility(id)
        .map_err(failure)?
        .map(|f| f.serves)
        .unwrap_or_default();
    let described = |names: &[String]| {
        if names.is_empty() {
            "nothing".to_owned()
        } else {
            names_for_people(names)
        }
    };
    // Journaled as other operator actions are.
    let journaled = gard.record_audit(&[AuditRecord::security(
        id,
        "",
        "changed",
        "serves-changed",
        format!(
            "served names set by the operator: {} (before: {})",
            described(&after),
            described(&before.serves)
        ),
    )]);
    if let Err(e) = journaled {
        eprintln!("warning: the change was not journaled: {e}");
    }
    writeln!(
        out,
        "Facility {id} ({}) now serves {}.",
        before.name,
        described(&after)
    )?;
    warn_shared(gard, id, &after)?;
    eprintln!(
        "A running gateway refuses other names from now on, and closes a connection \
         serving a name taken away when it sees the change."
    );
    Ok(())
}

fn list(gard: &Gard, out: &mut impl Write) -> Result<(), Failure> {
    let facilities = gard.facilities().map_err(failure)?;
    if facilities.is_empty() {
        eprintln!(
            "No facilities yet; add one with `{}`.",
            hint(gard, "add ID --name NAME")
        );
        return Ok(());
    }
    let header = [
        "ID",
        "ROLE",
        "STATUS",
        "NAME",
        "REGISTERED",
        "CERT EXPIRES",
        "KEY",
        "SERVES",
    ];
    let rows: Vec<[String; 8]> = facilities
        .iter()
        .map(|f| {
            [
                f.id.clone(),
                f.role.to_string(),
                f.status.to_string(),
                f.name.clone(),
                date(f.registered_at),
                date(f.cert_not_after),
                f.key_id.map_or_else(|| "-".to_owned(), |k| k.to_string()),
                if f.serves.is_empty() {
                    "-".to_owned()
                } else {
                    f.serves.join(",")
                },
            ]
        })
        .collect();
    write_table(out, &header, &rows)?;
    Ok(())
}

/// Writes `rows` under `header` in aligned columns, two spaces apart; the last column is
/// not padded.
fn write_table<const N: usize>(
    out: &mut impl Write,
    header: &[&str; N],
    rows: &[[String; N]],
) -> io::Result<()> {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut line = |cells: &[&str]| -> io::Result<()> {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            text.push_str(cell);
            if i + 1 < cells.len() {
                let pad = width - cell.chars().count() + 2;
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        writeln!(out, "{text}")
    };
    line(header)?;
    for row in rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cells)?;
    }
    Ok(())
}

fn show(gard: &Gard, id: &str, out: &mut impl Write) -> Result<(), Failure> {
    let Some(f) = gard.facility(id).map_err(failure)? else {
        return Err(unknown(gard, id));
    };
    let Facility {
        id,
        name,
        role,
        status,
        created_at,
        registered_at,
        cert_serial,
        cert_not_after,
        key_id,
        serves,
    } = f;
    let certificate = match (cert_serial, cert_not_after) {
        (Some(serial), Some(not_after)) => {
            let state = if Timestamp::now() >= not_after {
                "expired"
            } else {
                "expires"
            };
            format!("serial {serial}, {state} {}", when(not_after))
        }
        _ => "none".to_owned(),
    };
    let now = Timestamp::now();
    let code = match gard.code_info(&id).map_err(failure)? {
        None => "none".to_owned(),
        Some(CodeInfo {
            used_at: Some(used),
            ..
        }) => format!("used {}", when(used)),
        Some(CodeInfo { expires_at, .. }) if now >= expires_at => {
            format!("expired {}", when(expires_at))
        }
        Some(CodeInfo { expires_at, .. }) if status == Status::Revoked => {
            format!("unusable (revoked), would expire {}", when(expires_at))
        }
        Some(CodeInfo { expires_at, .. }) => format!("unused, valid until {}", when(expires_at)),
    };
    writeln!(out, "Facility:          {id}")?;
    writeln!(out, "Name:              {name}")?;
    writeln!(out, "Role:              {role}")?;
    let served = match role {
        Role::Client => "none (a client)".to_owned(),
        Role::Server if serves.is_empty() => {
            format!(
                "none yet (`{}` gives it names)",
                hint(gard, &format!("serves {id} NAME…"))
            )
        }
        Role::Server => names_for_people(&serves),
    };
    writeln!(out, "Serves:            {served}")?;
    writeln!(out, "Status:            {status}")?;
    writeln!(out, "Added:             {}", when(created_at))?;
    writeln!(
        out,
        "Registered:        {}",
        registered_at.map_or_else(|| "never".to_owned(), when)
    )?;
    writeln!(out, "Certificate:       {certificate}")?;
    writeln!(
        out,
        "Envelope key id:   {}",
        key_id.map_or_else(|| "none".to_owned(), |k| k.to_string())
    )?;
    writeln!(out, "Registration code: {code}")?;
    Ok(())
}

fn renew(
    gard: &Gard,
    id: &str,
    csr: &Path,
    file: Option<&Path>,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let bytes = std::fs::read(csr)
        .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", csr.display())))?;
    // PEM or DER.
    let der = match std::str::from_utf8(&bytes)
        .ok()
        .filter(|t| t.contains("-----BEGIN"))
    {
        Some(text) => {
            use rustls_pki_types::pem::PemObject;
            rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(text.as_bytes())
                .map_err(|_| {
                    Failure::Input(Some(format!(
                        "{} holds no PEM certificate signing request",
                        csr.display()
                    )))
                })?
                .as_ref()
                .to_vec()
        }
        None => bytes,
    };
    if gard.facility(id).map_err(failure)?.is_none() {
        return Err(unknown(gard, id));
    }
    let renewal = gard
        .renew(id, &der)
        .map_err(|e| Failure::Input(Some(format!("facility {id}: {e}"))))?;
    // Journaled as the gateway journals an online renewal.
    let journaled = gard.record_audit(&[hnapi::gard::AuditRecord::security(
        id,
        "",
        "renewed",
        "renewed",
        format!(
            "renewed by the operator from a CSR; valid until {}",
            renewal.not_after
        ),
    )]);
    if let Err(e) = journaled {
        eprintln!("warning: the renewal was not journaled: {e}");
    }
    match file {
        Some(path) => {
            std::fs::write(path, &renewal.certificate_pem).map_err(|e| {
                Failure::Input(Some(format!("cannot write {}: {e}", path.display())))
            })?;
            writeln!(
                out,
                "Renewed facility {id}: certificate written to {}, valid until {}.",
                path.display(),
                when(renewal.not_after)
            )?;
        }
        None => out.write_all(renewal.certificate_pem.as_bytes())?,
    }
    Ok(())
}

fn revoke(gard: &Gard, id: &str, out: &mut impl Write) -> Result<(), Failure> {
    let Some(f) = gard.facility(id).map_err(failure)? else {
        return Err(unknown(gard, id));
    };
    if f.status == Status::Revoked {
        writeln!(out, "Facility {id} ({}) was already revoked.", f.name)?;
        return Ok(());
    }
    match gard.revoke(id) {
        Ok(()) => {}
        Err(GardError::UnknownFacility(_)) => return Err(unknown(gard, id)),
        Err(e) => return Err(failure(e)),
    }
    writeln!(out, "Revoked facility {id} ({}).", f.name)?;
    writeln!(
        out,
        "New connections with its certificate are refused from now on, and it cannot register again;"
    )?;
    writeln!(
        out,
        "a running gateway closes its live connections when it sees the change."
    )?;
    Ok(())
}

/// The header of `audit --tsv`: the names of [`AuditRecord`]'s fields.
const AUDIT_TSV_HEADER: [&str; 15] = [
    "at",
    "kind",
    "facility",
    "peer",
    "sending_application",
    "control_id",
    "message_type",
    "route",
    "destination",
    "outcome",
    "code",
    "latency_ms",
    "request_bytes",
    "answer_bytes",
    "detail",
];

fn audit(gard: &Gard, args: AuditArgs, out: &mut impl Write) -> Result<(), Failure> {
    let filter = AuditFilter {
        since: args.since,
        facility: args.facility,
        outcome: args.outcome,
        kind: args.kind.map(AuditKind::from),
        limit: args.limit.map(|n| n as usize),
    };
    let records = gard.audit(&filter).map_err(failure)?;
    if args.tsv {
        writeln!(out, "{}", AUDIT_TSV_HEADER.join("\t"))?;
        for r in &records {
            let at =
                r.at.to_zoned_datetime(pacific().clone())
                    .strftime("%Y-%m-%dT%H:%M:%S%.f%:z")
                    .to_string();
            let cells = audit_cells(r, at);
            let cells: Vec<String> = cells.iter().map(|c| tsv_escape(c)).collect();
            writeln!(out, "{}", cells.join("\t"))?;
        }
        return Ok(());
    }
    if records.is_empty() {
        eprintln!("No audit records match.");
        return Ok(());
    }
    let header = [
        "TIME",
        "KIND",
        "FACILITY",
        "PEER",
        "APPLICATION",
        "CONTROL-ID",
        "TYPE",
        "ROUTE",
        "DESTINATION",
        "OUTCOME",
        "CODE",
        "MS",
        "REQUEST",
        "ANSWER",
        "DETAIL",
    ];
    let rows: Vec<[String; 15]> = records
        .iter()
        .map(|r| {
            let at =
                r.at.to_zoned_datetime(pacific().clone())
                    .strftime("%Y-%m-%dT%H:%M:%S%:z")
                    .to_string();
            // Cells for people: one line each, `-` for nothing.
            audit_cells(r, at).map(|cell| {
                let cell: String = cell
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                if cell.is_empty() {
                    "-".to_owned()
                } else {
                    cell
                }
            })
        })
        .collect();
    write_table(out, &header, &rows)?;
    Ok(())
}

/// The cells of one audit record, in the order of [`AUDIT_TSV_HEADER`], with its time
/// already written.
fn audit_cells(r: &AuditRecord, at: String) -> [String; 15] {
    [
        at,
        r.kind.to_string(),
        r.facility.clone(),
        r.peer.clone(),
        r.sending_application.clone(),
        r.control_id.clone(),
        r.message_type.clone(),
        r.route.clone(),
        r.destination.clone(),
        r.outcome.clone(),
        r.code.clone(),
        r.latency_ms.to_string(),
        r.request_bytes.to_string(),
        r.answer_bytes.to_string(),
        r.detail.clone(),
    ]
}

/// A TSV cell: backslash, tab, line feed and carriage return escaped as `\\`, `\t`, `\n`
/// and `\r`, every other control byte (below 0x20, and 0x7F) as `\xHH`, so that a cell
/// never splits a line or a column, nor carries a terminal escape.
fn tsv_escape(cell: &str) -> String {
    let mut text = String::with_capacity(cell.len());
    for c in cell.chars() {
        match c {
            '\\' => text.push_str("\\\\"),
            '\t' => text.push_str("\\t"),
            '\n' => text.push_str("\\n"),
            '\r' => text.push_str("\\r"),
            '\0'..='\x1f' | '\x7f' => text.push_str(&format!("\\x{:02X}", c as u32)),
            c => text.push(c),
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_times_and_spans() {
        let t = parse_since("2026-11-23T10:00:00-08:00").unwrap();
        assert_eq!(t, "2026-11-23T18:00:00Z".parse::<Timestamp>().unwrap());
        let civil = parse_since("2026-11-23T10:00").unwrap();
        let expected = "2026-11-23T10:00"
            .parse::<jiff::civil::DateTime>()
            .unwrap()
            .to_zoned_datetime(pacific().clone())
            .unwrap()
            .timestamp();
        assert_eq!(civil, expected);
        let now = Timestamp::now();
        for (text, seconds, slack) in [
            ("30m", 1800, 5),
            ("2h", 7200, 5),
            ("1d 2h", 26 * 3600, 3605),
        ] {
            // A calendar day is 23 to 25 hours in Pacific time.
            let back = now.as_second() - parse_since(text).unwrap().as_second();
            assert!((back - seconds).abs() <= slack, "{text}: {back}");
        }
        let week = now.as_second() - parse_since("7d").unwrap().as_second();
        assert!(
            (7 * 86400 - 3600..=7 * 86400 + 3600).contains(&week),
            "{week}"
        );
        for bad in ["", "2", "yesterday", "-2h", "2026-13-01"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tsv_cells_never_split() {
        assert_eq!(tsv_escape("a\tb\nc\rd\\e"), "a\\tb\\nc\\rd\\\\e");
        assert_eq!(tsv_escape("plain é"), "plain é");
        assert_eq!(tsv_escape("\0\x1b[2J\x7f"), "\\x00\\x1B[2J\\x7F");
    }
}
