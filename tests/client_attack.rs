//! The client side under attack (issue 14): what a party holding a stolen gateway key, or
//! able to write into the gateway's channel, can make a server application or a client
//! believe.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::System;
use hnapi::client::{Credential, Server, ServerConfig};
use hnapi::envelope::{self, Direction};
use hnapi::transport::{Frame, read_frame, tls, write_frame};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A gateway made with the directory's own gateway key (a stolen one): it accepts a
/// server application's connection and its `Serve`, then sends it `requests` as they are.
struct RogueGateway {
    addr: std::net::SocketAddr,
    served: Arc<std::sync::Mutex<Vec<Frame>>>,
    _runtime: tokio::runtime::Runtime,
}

impl RogueGateway {
    fn start(system: &System, requests: Vec<Vec<u8>>) -> Self {
        let gard = system.gard_dir();
        let read = |name: &str| std::fs::read(gard.join(name)).unwrap();
        let config = tls::server_config(
            tls::certificates_from_pem(&read("gate.pem")).unwrap(),
            tls::private_key_from_pem(&read("gate.key")).unwrap(),
            &tls::certificates_from_pem(&read("ca.pem")).unwrap(),
        )
        .unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(std::sync::Mutex::new(Vec::new()));
        let answers = served.clone();
        runtime.spawn(async move {
            let acceptor = TlsAcceptor::from(config);
            // Only the first connection: the application reconnects if it is closed.
            let (tcp, _) = listener.accept().await.unwrap();
            let mut stream = acceptor.accept(tcp).await.unwrap();
            write_frame(&mut stream, &Frame::Accepted).await.unwrap();
            let serve = read_frame(&mut stream, 1 << 20).await.unwrap();
            assert!(matches!(serve, Some(Frame::Serve { .. })), "{serve:?}");
            write_frame(&mut stream, &Frame::Accepted).await.unwrap();
            for (i, envelope) in requests.into_iter().enumerate() {
                let request = Frame::Request {
                    id: i as u64 + 1,
                    timeout_ms: 10_000,
                    envelope,
                };
                write_frame(&mut stream, &request).await.unwrap();
            }
            // Keep the connection, and keep what comes back (answers, pings).
            while let Ok(Some(frame)) = read_frame(&mut stream, 1 << 20).await {
                if let Frame::Ping { id } = frame {
                    let _ = write_frame(&mut stream, &Frame::Pong { id }).await;
                } else {
                    answers.lock().unwrap().push(frame);
                }
            }
        });
        Self {
            addr,
            served,
            _runtime: runtime,
        }
    }
}

/// The sandbox's server application configuration, pointed at `gateway`.
fn server_toml(system: &System, gateway: std::net::SocketAddr, extra: &str) -> ServerConfig {
    let original = ServerConfig::from_file(&system.sandbox().server_config()).unwrap();
    let dir = common::temp_dir("client-attack-server");
    let path = dir.join("server.toml");
    std::fs::write(
        &path,
        format!(
            "facility = \"{}\"\ncredential = \"{}\"\ngateways = [\"{gateway}\"]\n\
             applications = [\"HNAPI-DEMO\"]\nconnect_timeout_secs = 2\n{extra}",
            original.facility,
            original.credential.display(),
        ),
    )
    .unwrap();
    ServerConfig::from_file(&path).unwrap()
}

fn request(control_id: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|CLIENT|BC00000098|HNAPI-DEMO|BC00001013|20260101120000||R03|{control_id}|D|2.4\r"
    )
    .into_bytes()
}

/// Every request the application is given within `quiet` of the last.
fn received(server: &Server, quiet: Duration) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    while let Some(request) = server.receive(quiet).unwrap() {
        all.push(request.bytes);
    }
    all
}

#[test]
fn a_server_application_refuses_replayed_stale_and_foreign_requests() {
    let system = System::start("client-attack-replay");
    let config = server_toml(&system, "127.0.0.1:1".parse().unwrap(), "");
    let credential = Credential::read(&config.credential).unwrap();
    let seal = |facility: &str, timestamp_ms: u64, message: &[u8]| {
        envelope::seal(
            &credential.key,
            facility,
            Direction::Request,
            &[0; envelope::NONCE_LEN],
            timestamp_ms,
            message,
        )
        .unwrap()
        .bytes
    };
    let now = envelope::now_ms();
    let once = seal(&credential.facility, now, &request("FIRST"));
    let hour = 3_600_000;
    let requests = vec![
        once.clone(),
        // The same sealed request again, twice: delivered once only.
        once.clone(),
        once,
        // Sealed long ago, or far ahead, or at the epoch.
        seal(&credential.facility, 0, &request("EPOCH")),
        seal(&credential.facility, now - hour, &request("STALE")),
        seal(&credential.facility, now + hour, &request("AHEAD")),
        // Sealed with this facility's key but naming another facility.
        seal("BC00000098", now, &request("FOREIGN")),
        // A fresh, genuine request still gets through after all of them.
        seal(&credential.facility, envelope::now_ms(), &request("SECOND")),
    ];
    let rogue = RogueGateway::start(&system, requests);
    let config = server_toml(&system, rogue.addr, "");
    let server = Server::open(config).unwrap();
    assert!(server.wait_connected(Duration::from_secs(10)).unwrap());
    let got = received(&server, Duration::from_secs(2));
    let ids: Vec<String> = got.iter().map(|m| common::get(m, "MSH-10")).collect();
    assert_eq!(
        ids,
        ["FIRST", "SECOND"],
        "only the genuine requests, once each"
    );
    assert!(
        rogue.served.lock().unwrap().is_empty(),
        "refusals are not answered"
    );
}

#[test]
fn a_server_applications_window_and_replay_capacity_are_configurable() {
    let system = System::start("client-attack-window");
    let config = server_toml(&system, "127.0.0.1:1".parse().unwrap(), "");
    let credential = Credential::read(&config.credential).unwrap();
    let seal = |timestamp_ms: u64, message: &[u8]| {
        envelope::seal(
            &credential.key,
            &credential.facility,
            Direction::Request,
            &[0; envelope::NONCE_LEN],
            timestamp_ms,
            message,
        )
        .unwrap()
        .bytes
    };
    let now = envelope::now_ms();
    let requests = vec![
        // 20 s old: inside the default window of 300 s, outside a window of 10 s.
        seal(now - 20_000, &request("OLD")),
        seal(now, &request("ONE")),
        // The capacity of 2 is taken: refused until the first nonces expire.
        seal(now, &request("TWO")),
        seal(now, &request("THREE")),
    ];
    let rogue = RogueGateway::start(&system, requests);
    let config = server_toml(
        &system,
        rogue.addr,
        "envelope_window_secs = 10\nreplay_capacity = 2\n",
    );
    assert_eq!(config.envelope_window, Duration::from_secs(10));
    assert_eq!(config.replay_capacity, 2);
    let server = Server::open(config).unwrap();
    assert!(server.wait_connected(Duration::from_secs(10)).unwrap());
    let got = received(&server, Duration::from_secs(2));
    let ids: Vec<String> = got.iter().map(|m| common::get(m, "MSH-10")).collect();
    assert_eq!(ids, ["ONE", "TWO"]);
}

#[test]
fn a_server_configuration_refuses_a_zero_replay_capacity() {
    let system = System::start("client-attack-zero");
    let original = ServerConfig::from_file(&system.sandbox().server_config()).unwrap();
    let dir = common::temp_dir("client-attack-zero-config");
    let path = dir.join("server.toml");
    std::fs::write(
        &path,
        format!(
            "facility = \"{}\"\ncredential = \"{}\"\ngateways = [\"127.0.0.1:1\"]\n\
             applications = [\"HNAPI-DEMO\"]\nreplay_capacity = 0\n",
            original.facility,
            original.credential.display(),
        ),
    )
    .unwrap();
    let e = ServerConfig::from_file(&path).unwrap_err().to_string();
    assert!(e.contains("replay_capacity"), "{e}");
    assert_eq!(original.replay_capacity, 100_000);
    assert_eq!(original.envelope_window, Duration::from_secs(300));
}
