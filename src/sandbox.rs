//! A whole hnsecure system on loopback, for vendors to test against: HNGard's directory,
//! a gateway routing everything to the simulator, and one registered facility with its
//! `client.toml` and credential.
//!
//! The first [`Sandbox::start`] in a folder creates everything; later ones reuse it.
//! The facility is registered the way any facility is: with a one-time code, over TLS.
//!
//! ```text
//! DIR/gard/             HNGard's directory (CA, gateway certificate, SQLite)
//! DIR/gate.toml         the gateway's configuration: every route to the simulator
//! DIR/client.toml       the facility's client configuration (gateways = the sandbox)
//! DIR/credential.toml   the facility's credential (mode 0600)
//! DIR/server.toml       a demo server application's configuration: it serves HNAPI-DEMO
//!                       (run in the sandbox with [`SandboxOptions::demo_server`])
//! DIR/server-credential.toml  its credential (facility BC00000099, role server,
//!                       recorded in HNGard as serving HNAPI-DEMO)
//! DIR/sandbox.lock      locked while a sandbox runs in DIR, holding its pid: a second
//!                       sandbox in the same folder is refused and names that pid
//! ```
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::client::Credential;
use crate::gard::{Gard, InitOptions, Role};
use crate::gate::{Gate, GateConfig, GateError};

/// The gateway's network facility id in a sandbox (MSH-4 of its ACKs).
pub const GATE_FACILITY: &str = "HNGATE-SANDBOX";
/// The facility registered in a sandbox unless another is asked for.
pub const DEFAULT_FACILITY: &str = "BC00000098";
/// The demo server application's facility (registered with the role `server`).
pub const SERVER_FACILITY: &str = "BC00000099";
/// The application name the demo server application serves; routed to it as `app:HNAPI-DEMO`.
pub const SERVER_APPLICATION: &str = "HNAPI-DEMO";

/// What the sandbox's `gate.toml` has the `HNPS007E` answer for [`SERVER_APPLICATION`]
/// say when no server application serves it (its `not_connected_hint`).
pub const DEMO_HINT: &str =
    "start one: hnsecure sandbox --demo-server, or a program with server.toml";

/// How to start a sandbox.
#[derive(Clone, Debug)]
pub struct SandboxOptions {
    /// The folder; created when missing.
    pub dir: PathBuf,
    /// The port on 127.0.0.1 (0 picks a free one).
    pub port: u16,
    /// The facility to register.
    pub facility: String,
    /// Runs the demo server application too ([`DemoServer`], with `server.toml`), so
    /// that [`SERVER_APPLICATION`] is answered; without it, it is answered `HNPS007E`
    /// until a program connects with `server.toml`.
    pub demo_server: bool,
}

/// A running sandbox.
pub struct Sandbox {
    addr: SocketAddr,
    dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    serving: Option<JoinHandle<Result<(), GateError>>>,
    reloader: crate::gate::Reloader,
    listen: SocketAddr,
    /// `DIR/sandbox.lock`, locked while this sandbox runs: one sandbox per folder.
    lock: Option<std::fs::File>,
    /// The demo server application, when asked for.
    demo: Option<DemoServer>,
}

/// The lock file of a sandbox's folder, holding the pid of the sandbox that has it.
pub const LOCK_FILE: &str = "sandbox.lock";

/// Takes the folder's lock (an OS file lock, let go when the process ends however it
/// ends), or says which process holds it. Before anything in the folder is touched: a
/// second sandbox must not rewrite the first one's `client.toml`.
fn lock_folder(dir: &Path) -> Result<std::fs::File, SandboxError> {
    use std::io::{Read, Seek, Write};
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| fail(&format!("cannot open {}", path.display()))(&e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() {
                "another process".to_owned()
            } else {
                format!("process {holder}")
            };
            return Err(SandboxError(format!(
                "{} is in use by another hnsecure sandbox ({who}); stop it, or give another --dir",
                dir.display()
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(fail(&format!("cannot lock {}", path.display()))(&e));
        }
    }
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .and_then(|()| file.flush());
    written.map_err(|e| fail(&format!("cannot write {}", path.display()))(&e))?;
    Ok(file)
}

/// Reloads a running sandbox's `gate.toml` ([`Sandbox::reloader`]).
#[derive(Clone)]
pub struct SandboxReloader {
    reloader: crate::gate::Reloader,
    gate_toml: PathBuf,
    listen: SocketAddr,
}

impl SandboxReloader {
    /// The configuration file it reads.
    pub fn gate_config(&self) -> &Path {
        &self.gate_toml
    }

    /// Reads `gate.toml` again and puts it in force (its `listen` stays the sandbox's
    /// address); a configuration with a mistake is refused and the running one stays.
    /// Returns the reload's summary.
    pub fn reload(&self) -> Result<String, SandboxError> {
        let mut config =
            GateConfig::from_file(&self.gate_toml).map_err(|e| fail("gate.toml")(&e))?;
        config.listen = self.listen;
        self.reloader
            .reload(config)
            .map_err(|e| fail("gate.toml")(&e))
    }
}

/// Why a sandbox could not start.
#[derive(Debug)]
pub struct SandboxError(pub String);

impl std::fmt::Display for SandboxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SandboxError {}

fn fail(what: &str) -> impl Fn(&dyn std::fmt::Display) -> SandboxError + '_ {
    move |e| SandboxError(format!("{what}: {e}"))
}

impl Sandbox {
    /// Creates (or reuses) the sandbox in `options.dir`, starts its gateway on this
    /// runtime, and makes sure the facility is registered.
    pub async fn start(options: &SandboxOptions) -> Result<Self, SandboxError> {
        let dir = &options.dir;
        // A facility id that cannot be registered is refused before anything is made.
        crate::gard::check_facility_id(&options.facility)
            .map_err(|e| SandboxError(format!("--facility: {e}")))?;
        create_private_dir(dir)
            .map_err(|e| fail(&format!("cannot create {}", dir.display()))(&e))?;
        let dir = dir.canonicalize().map_err(|e| fail("sandbox folder")(&e))?;
        let lock = lock_folder(&dir)?;
        let gard_dir = dir.join("gard");
        let gard = if gard_dir.join("gard.db").exists() {
            Gard::open(&gard_dir).map_err(|e| fail("HNGard")(&e))?
        } else {
            log::info!("creating HNGard's directory in {}", gard_dir.display());
            Gard::init(
                &gard_dir,
                &InitOptions {
                    subject_alt_names: Vec::new(),
                },
            )
            .map_err(|e| fail("HNGard")(&e))?
        };
        let gate_toml = dir.join("gate.toml");
        if !gate_toml.exists() {
            std::fs::write(&gate_toml, gate_toml_text(options.port))
                .map_err(|e| fail("gate.toml")(&e))?;
        }
        let mut config = GateConfig::from_file(&gate_toml).map_err(|e| fail("gate.toml")(&e))?;
        config.listen = SocketAddr::from(([127, 0, 0, 1], options.port));
        let listen = config.listen;
        let gate = Gate::bind(config).await.map_err(|e| match &e {
            GateError::Bind(addr, io) if io.kind() == std::io::ErrorKind::AddrInUse => {
                SandboxError(format!(
                    "gateway: {addr} is in use (another sandbox or gateway?); \
                     --port 0 picks a free port, and the ready line says which"
                ))
            }
            _ => fail("gateway")(&e),
        })?;
        let addr = gate.local_addr();
        let reloader = gate.reloader();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(gate.run(async {
            let _ = stopped.await;
        }));
        let mut sandbox = Self {
            addr,
            dir: dir.clone(),
            stop: Some(stop),
            serving: Some(serving),
            reloader,
            listen,
            lock: Some(lock),
            demo: None,
        };
        if let Err(e) = sandbox.ensure_facility(&gard, &options.facility).await {
            sandbox.stop().await;
            return Err(e);
        }
        if options.demo_server {
            match DemoServer::start(&sandbox.server_config()).await {
                Ok(demo) => sandbox.demo = Some(demo),
                Err(e) => {
                    sandbox.stop().await;
                    return Err(e);
                }
            }
        }
        Ok(sandbox)
    }

    /// Makes sure the client facility and the demo server application are registered,
    /// then writes `client.toml` and `server.toml` for this gateway address.
    async fn ensure_facility(&mut self, gard: &Gard, facility: &str) -> Result<(), SandboxError> {
        self.ensure_registered(
            gard,
            facility,
            "Sandbox facility",
            Role::Client,
            "credential.toml",
        )
        .await?;
        self.ensure_registered(
            gard,
            SERVER_FACILITY,
            "Sandbox server application",
            Role::Server,
            "server-credential.toml",
        )
        .await?;
        ensure_serves(gard)?;
        let client_toml = format!(
            "# The sandbox's client configuration (rewritten at every start).\n\
             facility = \"{facility}\"\ncredential = \"credential.toml\"\ngateways = [\"{}\"]\ntimeout_secs = 70\n",
            self.addr
        );
        std::fs::write(self.client_config(), client_toml).map_err(|e| fail("client.toml")(&e))?;
        let server_toml = format!(
            "# The sandbox's demo server application (rewritten at every start): it answers\n\
             # the requests to {SERVER_APPLICATION}, which gate.toml routes to app:{SERVER_APPLICATION}.\n\
             facility = \"{SERVER_FACILITY}\"\ncredential = \"server-credential.toml\"\ngateways = [\"{}\"]\n\
             applications = [\"{SERVER_APPLICATION}\"]\n",
            self.addr
        );
        std::fs::write(self.server_config(), server_toml).map_err(|e| fail("server.toml")(&e))?;
        Ok(())
    }

    /// Registers `facility` unless the credential already in `file` is its own and
    /// HNGard still accepts it.
    async fn ensure_registered(
        &self,
        gard: &Gard,
        facility: &str,
        name: &str,
        role: Role,
        file: &str,
    ) -> Result<(), SandboxError> {
        let credential_path = self.dir.join(file);
        let usable = Credential::read(&credential_path).ok().filter(|c| {
            c.facility == facility
                && c.tls_parts()
                    .ok()
                    .and_then(|p| p.chain.first().map(|d| gard.authenticate(d).is_ok()))
                    .unwrap_or(false)
        });
        if usable.is_some() {
            return Ok(());
        }
        log::info!("registering facility {facility} with the sandbox's HNGard");
        let week = Duration::from_secs(7 * 24 * 3600);
        let serves = match role {
            Role::Server => vec![SERVER_APPLICATION.to_owned()],
            Role::Client => Vec::new(),
        };
        let code = match gard.facility(facility).map_err(|e| fail("HNGard")(&e))? {
            Some(_) => gard.new_code(facility, week),
            None => gard.add_facility_serving(facility, name, role, &serves, week),
        }
        .map_err(|e| fail("HNGard")(&e))?;
        let ca = gard.ca_pem().map_err(|e| fail("HNGard")(&e))?;
        let credential = crate::client::register(
            &self.addr.to_string(),
            facility,
            &code,
            &ca,
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| fail("registration")(&e))?;
        credential
            .write(&credential_path)
            .map_err(|e| fail(file)(&e))
    }

    /// The gateway's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The facility's `client.toml`.
    pub fn client_config(&self) -> PathBuf {
        self.dir.join("client.toml")
    }

    /// The demo server application's `server.toml`.
    pub fn server_config(&self) -> PathBuf {
        self.dir.join("server.toml")
    }

    /// The gateway's `gate.toml`.
    pub fn gate_config(&self) -> PathBuf {
        self.dir.join("gate.toml")
    }

    /// What reads `gate.toml` again and puts it in force, as `hnsecure gate` does on
    /// SIGHUP; it may be moved to another task.
    pub fn reloader(&self) -> SandboxReloader {
        SandboxReloader {
            reloader: self.reloader.clone(),
            gate_toml: self.gate_config(),
            listen: self.listen,
        }
    }

    /// The sandbox's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the demo server application (when it runs) and the gateway (running
    /// transactions finish first), and waits for them.
    pub async fn stop(&mut self) {
        if let Some(demo) = self.demo.take() {
            demo.stop().await;
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(serving) = self.serving.take() {
            let _ = serving.await;
        }
        // The folder is free for the next sandbox once this one has stopped serving.
        self.lock = None;
    }

    /// Waits until the gateway stops on its own (it does not, unless it fails).
    pub async fn wait(&mut self) -> Result<(), SandboxError> {
        match self.serving.take() {
            Some(serving) => match serving.await {
                Ok(result) => result.map_err(|e| fail("gateway")(&e)),
                Err(e) => Err(fail("gateway")(&e)),
            },
            None => Ok(()),
        }
    }
}

/// The demo server application: an HNAPI server application ([`crate::client::Server`],
/// the Rust API that `hnapi_server_open` wraps) that answers every request routed to
/// [`SERVER_APPLICATION`] with an AA, as `examples/c/server.c` does: MSH-3/4 and MSH-5/6
/// the request's swapped, MSA-2 its MSH-10, one ERR `HJMB001I SUCCESSFULLY COMPLETED`.
/// It runs on a thread of its own (the server API blocks).
pub struct DemoServer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How long [`DemoServer::start`] waits for the gateway to accept the application.
const DEMO_CONNECT_WAIT: Duration = Duration::from_secs(15);

impl DemoServer {
    /// Opens the server application described by `server_toml` and waits until a
    /// gateway has accepted it, so that its requests are answered from then on.
    pub async fn start(server_toml: &Path) -> Result<Self, SandboxError> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let config = crate::client::ServerConfig::from_file(server_toml)
            .map_err(|e| fail("server.toml")(&e))?;
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (started, starting) = oneshot::channel::<Result<(), SandboxError>>();
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("demo-server".into())
            .spawn(move || {
                let server = match crate::client::Server::open(config) {
                    Ok(server) => server,
                    Err(e) => {
                        let _ = started.send(Err(fail("demo server application")(&e)));
                        return;
                    }
                };
                match server.wait_connected(DEMO_CONNECT_WAIT) {
                    Ok(true) => {
                        let _ = started.send(Ok(()));
                    }
                    Ok(false) => {
                        let _ = started.send(Err(SandboxError(format!(
                            "demo server application: the gateway did not accept it within {} s",
                            DEMO_CONNECT_WAIT.as_secs()
                        ))));
                        return;
                    }
                    Err(e) => {
                        let _ = started.send(Err(fail("demo server application")(&e)));
                        return;
                    }
                }
                log::info!("demo server application serving {SERVER_APPLICATION}");
                while !stopping.load(Ordering::Relaxed) {
                    match server.receive(Duration::from_millis(200)) {
                        Ok(Some(request)) => {
                            let Some(answer) = demo_answer(&request.bytes) else {
                                // Not HL7 the gateway let through: it gets no answer, and
                                // the sender its route's timeout.
                                log::warn!(
                                    "demo server application: a request without a usable MSH"
                                );
                                continue;
                            };
                            if let Err(e) = server.respond(request.id, &answer) {
                                log::warn!("demo server application: cannot answer: {e}");
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            log::warn!("demo server application stopped: {e}");
                            break;
                        }
                    }
                }
            })
            .map_err(|e| fail("demo server application")(&e))?;
        let demo = Self {
            stop,
            thread: Some(thread),
        };
        match starting.await {
            Ok(Ok(())) => Ok(demo),
            Ok(Err(e)) => {
                demo.stop().await;
                Err(e)
            }
            Err(_) => {
                demo.stop().await;
                Err(SandboxError(
                    "demo server application: its thread ended before it started".into(),
                ))
            }
        }
    }

    /// Stops the application and waits for its thread.
    pub async fn stop(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// The demo server application's answer to `request`: an AA (see [`DemoServer`]).
fn demo_answer(request: &[u8]) -> Option<Vec<u8>> {
    use crate::hl7::{AckCode, AppError, Message, application_ack};
    let message = Message::parse(request).ok()?;
    let done = AppError::new("HJMB001I", "SUCCESSFULLY COMPLETED").ok()?;
    let ack = application_ack(
        &message,
        AckCode::Accept,
        &[done],
        &crate::hl7::new_control_id(),
        &crate::hl7::now_pacific(),
    );
    Some(ack.to_bytes())
}

/// Makes sure HNGard records the demo server application as serving
/// [`SERVER_APPLICATION`]: a sandbox made before HNGard recorded served names has none.
fn ensure_serves(gard: &Gard) -> Result<(), SandboxError> {
    let server = gard
        .facility(SERVER_FACILITY)
        .map_err(|e| fail("HNGard")(&e))?;
    if server.is_some_and(|f| !f.serves.iter().any(|n| n == SERVER_APPLICATION)) {
        log::info!("recording that facility {SERVER_FACILITY} serves {SERVER_APPLICATION}");
        gard.set_serves(SERVER_FACILITY, &[SERVER_APPLICATION.to_owned()])
            .map_err(|e| fail("HNGard")(&e))?;
    }
    Ok(())
}

fn gate_toml_text(port: u16) -> String {
    format!(
        "# The sandbox's gateway (hnsecure sandbox). Requests to {SERVER_APPLICATION} go to the demo\n\
         # server application (server.toml); every other request goes to the simulator.\n\
         listen = \"127.0.0.1:{port}\"\n\
         gard = \"gard\"\n\
         facility = \"{GATE_FACILITY}\"\n\n\
         [[route]]\n\
         application = \"{SERVER_APPLICATION}\"\n\
         destination = \"app:{SERVER_APPLICATION}\"\n\
         not_connected_hint = \"{DEMO_HINT}\"\n\
         timeout_secs = 70\n\n\
         [[route]]\n\
         application = \"*\"\n\
         destination = \"sim\"\n\
         timeout_secs = 70\n"
    )
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}
