//! End to end over real TLS on loopback: registration, transactions through the gateway
//! to the simulator, and everything the gateway and the client core must refuse.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{FACILITY, System, example, get, request};
use hnapi::client::{Client, Credential};
use hnapi::envelope::{self, Direction};
use hnapi::gard::Gard;
use hnapi::transport::{self, Frame, Refusal, read_frame, tls, write_frame};

#[test]
fn register_send_and_answer() {
    let system = System::start("answer");
    let client = Client::open_file(&system.client_config()).unwrap();
    let request = example("v5_2_5_3_request");
    let answer = client.send_receive(&request, None).unwrap();
    assert_eq!(answer.network_error, None);
    assert_eq!(
        get(&answer.bytes, "MSA-1"),
        "AA",
        "{:?}",
        String::from_utf8_lossy(&answer.bytes)
    );
    assert_eq!(get(&answer.bytes, "MSA-2"), get(&request, "MSH-10"));
    let phn = get(&answer.bytes, "PID-2.1");
    assert_eq!(hnapi::hl7::phn_error(phn.as_bytes()), None, "{phn}");
    // The answer is the simulator's, not rewritten on the way: MSH-3/4 are its own.
    assert_eq!(get(&answer.bytes, "MSH-3"), "RAIRCRD-NW-PRSN");
    assert_eq!(get(&answer.bytes, "MSH-5"), get(&request, "MSH-3"));
}

#[test]
fn the_credential_is_private_and_holds_the_facility() {
    let system = System::start("credential");
    let credential = Credential::read(&system.credential()).unwrap();
    assert_eq!(credential.facility, FACILITY);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(system.credential())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn msh4_not_the_certificates_facility_is_refused() {
    let system = System::start("spoof");
    let client = Client::open_file(&system.client_config()).unwrap();
    let spoofed = String::from_utf8(request("RAIEND-PYR-RL", "R35", "PID||9029274643^^^BC^PH\r"))
        .unwrap()
        .replacen(FACILITY, "BC99999999", 1);
    let answer = client.send_receive(spoofed.as_bytes(), None).unwrap();
    assert_eq!(get(&answer.bytes, "MSH-3"), "HNGATE");
    assert_eq!(get(&answer.bytes, "MSA-1"), "AR");
    assert!(
        get(&answer.bytes, "MSA-3").starts_with("VLDT008E "),
        "{}",
        get(&answer.bytes, "MSA-3")
    );
    assert_eq!(
        get(&answer.bytes, "MSA-2"),
        get(spoofed.as_bytes(), "MSH-10")
    );
}

#[test]
fn the_gateway_checks_each_message_in_order() {
    let gate_toml = "listen = \"127.0.0.1:0\"\ngard = \"gard\"\nfacility = \"HNGATE01\"\n\
                     [[route]]\napplication = \"RAIEND-PYR-RL\"\ndestination = \"sim\"\n";
    let system = System::start_with("checks", Some(gate_toml));
    let client = Client::open_file(&system.client_config()).unwrap();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            request("NO-SUCH-APP", "R35", ""),
            "HNPS005E Unknown receiving application: NO-SUCH-APP",
        ),
        (
            request("RAIEND-PYR-RL", "ZPN", ""),
            "HNPS006E Reserved message type is not supported: ZPN",
        ),
        (
            format!("MSH|^~\\&|T|{FACILITY}|RAIEND-PYR-RL||1||R35|77|D|2.3\r").into_bytes(),
            "VLDT009E ",
        ),
        (
            format!("MSH|^~\\&|T|{FACILITY}|RAIEND-PYR-RL|X|1||R35||D|2.3\r").into_bytes(),
            "HNPS002E ",
        ),
    ];
    for (message, expected) in cases {
        let answer = client.send_receive(&message, None).unwrap();
        assert_eq!(get(&answer.bytes, "MSH-3"), "HNGATE");
        assert_eq!(
            get(&answer.bytes, "MSH-4"),
            "HNGATE01",
            "the gateway's network facility id"
        );
        assert_eq!(get(&answer.bytes, "MSH-9"), "ACK");
        let msa3 = get(&answer.bytes, "MSA-3");
        assert!(msa3.starts_with(expected), "{expected}: {msa3}");
    }
    // The routed application still answers.
    let answer = client
        .send_receive(&example("v5_2_5_4_request"), None)
        .unwrap();
    assert_eq!(get(&answer.bytes, "MSA-1"), "AA");
}

#[test]
fn input_without_msh_is_an_error_not_an_answer() {
    let system = System::start("nomsh");
    let client = Client::open_file(&system.client_config()).unwrap();
    assert!(matches!(
        client.send_receive(b"PID||9029274643^^^BC^PH\r", None),
        Err(hnapi::client::ClientError::InvalidFormat(_))
    ));
    assert!(matches!(
        client.send(b"", None),
        Err(hnapi::client::ClientError::InvalidFormat(_))
    ));
}

#[test]
fn a_receiver_that_never_answers_times_out() {
    let system = System::start("noresponse");
    let client = Client::open_file(&system.client_config()).unwrap();
    let message = request("HNSIM-NORESPONSE", "R03", "PID||9029274643^^^BC^PH\r");
    let started = Instant::now();
    let answer = client
        .send_receive(&message, Some(Duration::from_secs(2)))
        .unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "answered within the timeout: {took:?}"
    );
    assert_eq!(get(&answer.bytes, "MSA-1"), "AR");
    assert!(
        get(&answer.bytes, "MSA-3")
            .starts_with("TXFR024E Connection with remote facility timed out.")
    );
    // The gateway gave up just before the sender, so the answer says where: HNGATE.
    assert_eq!(get(&answer.bytes, "MSH-3"), "HNGATE");
    assert_eq!(get(&answer.bytes, "MSA-2"), get(&message, "MSH-10"));
}

#[test]
fn an_unreachable_gateway_is_answered_by_hnapi() {
    let system = System::start("unreachable");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = system.client_config_with(&[closed.to_string()]);
    let client = Client::open_file(&config).unwrap();
    let message = example("v5_2_5_4_request");
    let answer = client
        .send_receive(&message, Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(
        answer.network_error,
        Some(hnapi::hl7::NetworkCode::Txfr024E)
    );
    assert_eq!(get(&answer.bytes, "MSH-3"), "HNAPI");
    assert_eq!(
        get(&answer.bytes, "MSH-4"),
        "",
        "blank: the transaction did not leave HNAPI"
    );
    assert_eq!(get(&answer.bytes, "MSA-2"), get(&message, "MSH-10"));
}

#[test]
fn the_second_gateway_answers_when_the_first_is_down() {
    let system = System::start("failover");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = system.client_config_with(&[closed.to_string(), system.addr()]);
    let client = Client::open_file(&config).unwrap();
    let answer = client
        .send_receive(&example("v5_2_5_4_request"), None)
        .unwrap();
    assert_eq!(answer.network_error, None);
    assert_eq!(get(&answer.bytes, "MSA-1"), "AA");
}

#[test]
fn a_revoked_facility_is_refused_and_its_connection_closed() {
    let system = System::start("revoked");
    let client = Client::open_file(&system.client_config()).unwrap();
    let first = client
        .send_receive(&example("v5_2_5_4_request"), None)
        .unwrap();
    assert_eq!(get(&first.bytes, "MSA-1"), "AA");

    // An operator revokes the facility from another process's handle on the directory.
    Gard::open(&system.gard_dir())
        .unwrap()
        .revoke(FACILITY)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = client
            .send_receive(&example("v5_2_5_4_request"), None)
            .unwrap();
        if answer.network_error == Some(hnapi::hl7::NetworkCode::Txfr029E) {
            assert_eq!(get(&answer.bytes, "MSH-3"), "HNAPI");
            assert!(get(&answer.bytes, "MSA-3").starts_with("TXFR029E "));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still answered 10 s after revocation"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn revocation_closes_a_live_idle_connection_within_five_seconds() {
    let system = System::start("revoked-live");
    let (mut stream, _) = system.runtime.block_on(raw_session(&system));
    Gard::open(&system.gard_dir())
        .unwrap()
        .revoke(FACILITY)
        .unwrap();
    let started = Instant::now();
    let frames = system.runtime.block_on(async {
        let mut frames = Vec::new();
        while let Ok(Ok(Some(frame))) = tokio::time::timeout(
            Duration::from_secs(5),
            read_frame(&mut stream, transport::DEFAULT_MAX_FRAME),
        )
        .await
        {
            frames.push(frame);
        }
        frames
    });
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after {:?}",
        started.elapsed()
    );
    assert_eq!(
        frames,
        vec![Frame::Refused {
            id: 0,
            reason: Refusal::Revoked
        }]
    );
}

/// A raw connection as the client core makes it, for crafting frames by hand.
async fn raw_session(system: &System) -> (transport::ClientStream, Credential) {
    let credential = Credential::read(&system.credential()).unwrap();
    (session_as(system, &credential).await, credential)
}

/// An authenticated connection with `credential`.
async fn session_as(system: &System, credential: &Credential) -> transport::ClientStream {
    let parts = credential.tls_parts().unwrap();
    let config = tls::client_config(&parts.ca, Some((parts.chain, parts.key))).unwrap();
    let mut stream = transport::connect(&system.addr(), config, Duration::from_secs(5))
        .await
        .unwrap();
    let first = read_frame(&mut stream, transport::DEFAULT_MAX_FRAME)
        .await
        .unwrap();
    assert_eq!(first, Some(Frame::Accepted));
    stream
}

fn sealed_request(credential: &Credential, message: &[u8]) -> Vec<u8> {
    envelope::seal(
        &credential.key,
        &credential.facility,
        Direction::Request,
        &[0; envelope::NONCE_LEN],
        envelope::now_ms(),
        message,
    )
    .unwrap()
    .bytes
}

#[test]
fn tampered_and_replayed_envelopes_are_refused() {
    let system = System::start("envelopes");
    system.runtime.block_on(async {
        let (mut stream, credential) = raw_session(&system).await;
        let sealed = sealed_request(&credential, &example("v5_2_5_4_request"));
        let mut exchange = async |frame: Frame| {
            write_frame(&mut stream, &frame).await.unwrap();
            read_frame(&mut stream, transport::DEFAULT_MAX_FRAME)
                .await
                .unwrap()
                .unwrap()
        };
        // The genuine envelope is answered.
        let answer = exchange(Frame::Request {
            id: 1,
            timeout_ms: 5000,
            envelope: sealed.clone(),
        })
        .await;
        let Frame::Response { id: 1, envelope } = answer else {
            panic!("expected a response, got {answer:?}")
        };
        let opened = envelope::open(&credential.key, &envelope, Direction::Response).unwrap();
        assert_eq!(get(&opened.plaintext, "MSA-1"), "AA");

        // The same envelope again is a replay.
        let again = exchange(Frame::Request {
            id: 2,
            timeout_ms: 5000,
            envelope: sealed.clone(),
        })
        .await;
        assert_eq!(
            again,
            Frame::Refused {
                id: 2,
                reason: Refusal::Replayed
            }
        );

        // Any flipped byte is refused, wherever it is.
        let fresh = sealed_request(&credential, &example("v5_2_5_4_request"));
        for (n, at) in [0, 10, fresh.len() / 2, fresh.len() - 1]
            .into_iter()
            .enumerate()
        {
            let mut tampered = fresh.clone();
            tampered[at] ^= 0x40;
            let id = 10 + n as u64;
            let refused = exchange(Frame::Request {
                id,
                timeout_ms: 5000,
                envelope: tampered,
            })
            .await;
            assert_eq!(
                refused,
                Frame::Refused {
                    id,
                    reason: Refusal::EnvelopeRefused
                },
                "byte {at}"
            );
        }

        // An envelope from long ago is outside the window.
        let old = envelope::seal(
            &credential.key,
            &credential.facility,
            Direction::Request,
            &[0; envelope::NONCE_LEN],
            envelope::now_ms() - 3_600_000,
            &example("v5_2_5_4_request"),
        )
        .unwrap();
        let refused = exchange(Frame::Request {
            id: 20,
            timeout_ms: 5000,
            envelope: old.bytes,
        })
        .await;
        assert_eq!(
            refused,
            Frame::Refused {
                id: 20,
                reason: Refusal::OutsideWindow
            }
        );

        // The connection still serves after all that.
        let fresh = sealed_request(&credential, &example("v5_2_5_4_request"));
        let answer = exchange(Frame::Request {
            id: 30,
            timeout_ms: 5000,
            envelope: fresh,
        })
        .await;
        assert!(
            matches!(answer, Frame::Response { id: 30, .. }),
            "{answer:?}"
        );
    });
}

#[test]
fn a_frame_over_the_maximum_closes_only_that_connection() {
    let system = System::start("bigframe");
    system.runtime.block_on(async {
        let (mut stream, _) = raw_session(&system).await;
        use tokio::io::AsyncWriteExt;
        // Announce 64 MiB: refused before anything is read or allocated.
        stream
            .write_all(&(64u32 << 20).to_be_bytes())
            .await
            .unwrap();
        stream.flush().await.unwrap();
        let after = read_frame(&mut stream, transport::DEFAULT_MAX_FRAME).await;
        assert!(matches!(after, Ok(None) | Err(_)), "{after:?}");
    });
    // The gateway is still up for others.
    let client = Client::open_file(&system.client_config()).unwrap();
    let answer = client
        .send_receive(&example("v5_2_5_4_request"), None)
        .unwrap();
    assert_eq!(get(&answer.bytes, "MSA-1"), "AA");
}

#[test]
fn tls12_and_plaintext_clients_are_refused() {
    let system = System::start("tls12");
    let credential = Credential::read(&system.credential()).unwrap();
    let parts = credential.tls_parts().unwrap();
    system.runtime.block_on(async {
        // A TLS 1.2-only client, with a valid certificate.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(parts.ca[0].clone()).unwrap();
        let tls12 = rustls::ClientConfig::builder_with_provider(tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(parts.chain.clone(), parts.key.clone_key())
            .unwrap();
        let refused =
            transport::connect(&system.addr(), Arc::new(tls12), Duration::from_secs(5)).await;
        assert!(
            matches!(refused, Err(transport::ConnectError::Handshake(_))),
            "{refused:?}"
        );

        // Plain TCP: HL7 sent in the clear gets no answer, only a closed connection.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(system.addr()).await.unwrap();
        tcp.write_all(&example("v5_2_5_4_request")).await.unwrap();
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "the gateway closed the connection");
        assert!(
            !got.windows(3).any(|w| w == b"MSA"),
            "no HL7 answer in the clear"
        );
    });
}

#[test]
fn eight_threads_share_one_client() {
    let system = System::start("threads");
    let client = Arc::new(Client::open_file(&system.client_config()).unwrap());
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            std::thread::spawn(move || {
                for _ in 0..200 {
                    let message = example("v5_2_5_4_request");
                    let answer = client.send_receive(&message, None).unwrap();
                    assert_eq!(answer.network_error, None);
                    assert_eq!(get(&answer.bytes, "MSA-2"), get(&message, "MSH-10"));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

#[test]
fn tickets_with_fifty_in_flight() {
    let system = System::start("tickets");
    let client = Client::open_file(&system.client_config()).unwrap();
    let sent: Vec<_> = (0..50)
        .map(|_| {
            let message = example("v5_2_5_5_request");
            let ticket = client.send(&message, None).unwrap();
            (ticket, message)
        })
        .collect();
    for (ticket, message) in sent.into_iter().rev() {
        let answer = client
            .receive(ticket, Duration::from_secs(10))
            .unwrap()
            .expect("answered in time");
        assert_eq!(get(&answer.bytes, "MSA-2"), get(&message, "MSH-10"));
        assert!(matches!(
            client.receive(ticket, Duration::ZERO),
            Err(hnapi::client::ClientError::UnknownTicket)
        ));
    }
    // A ticket still pending stays valid.
    let slow = client
        .send(
            &request("HNSIM-NORESPONSE", "R03", ""),
            Some(Duration::from_secs(2)),
        )
        .unwrap();
    assert!(client.receive(slow, Duration::ZERO).unwrap().is_none());
    assert!(
        client
            .receive(slow, Duration::from_millis(100))
            .unwrap()
            .is_none()
    );
    let late = client
        .receive(slow, Duration::from_secs(5))
        .unwrap()
        .unwrap();
    assert!(get(&late.bytes, "MSA-3").starts_with("TXFR024E"));
}

/// An AA acknowledgment of `request`, as a receiving application answers.
fn ack(request: &[u8], from: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|{from}|BC00000099|{}|{}|{}||ACK|{}|D|2.3\rMSA|AA|{}|HJMB001ISUCCESSFULLY COMPLETED\r",
        get(request, "MSH-3"),
        get(request, "MSH-4"),
        hnapi::hl7::now_pacific(),
        hnapi::hl7::new_control_id(),
        get(request, "MSH-10")
    )
    .into_bytes()
}

/// Sends until the server application is connected (until then: HNPS007E).
fn send_when_served(client: &Client, message: &[u8]) -> hnapi::client::Answer {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = client
            .send_receive(message, Some(Duration::from_secs(5)))
            .unwrap();
        if !get(&answer.bytes, "MSA-3").starts_with("HNPS007E") || Instant::now() > deadline {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_server_application_answers_through_the_gateway() {
    let system = System::start("serverapp");
    let server =
        Arc::new(hnapi::client::Server::open_file(&system.sandbox().server_config()).unwrap());
    let serving = {
        let server = server.clone();
        std::thread::spawn(move || {
            let mut answered = 0;
            while answered < 5 {
                if let Some(request) = server.receive(Duration::from_millis(200)).unwrap() {
                    server
                        .respond(request.id, &ack(&request.bytes, "HNAPI-DEMO"))
                        .unwrap();
                    answered += 1;
                }
            }
        })
    };
    let client = Client::open_file(&system.client_config()).unwrap();
    for _ in 0..5 {
        let message = request("HNAPI-DEMO", "R03", "PID||9029274643^^^BC^PH\r");
        let answer = send_when_served(&client, &message);
        assert_eq!(
            get(&answer.bytes, "MSH-3"),
            "HNAPI-DEMO",
            "{:?}",
            String::from_utf8_lossy(&answer.bytes)
        );
        assert_eq!(get(&answer.bytes, "MSA-2"), get(&message, "MSH-10"));
    }
    serving.join().unwrap();
    // Answering an id twice, or one never received, is refused.
    assert!(matches!(
        server.respond(1, b"MSH|^~\\&|A|B|C|D|1||ACK|1|P|2.3\r"),
        Err(hnapi::client::ClientError::UnknownRequest)
    ));
}

#[test]
fn a_route_to_an_application_nobody_serves() {
    let gate_toml = "listen = \"127.0.0.1:0\"\ngard = \"gard\"\nfacility = \"HNGATE01\"\n\
                     [[route]]\napplication = \"NOBODY\"\ndestination = \"app:NOBODY\"\n";
    let system = System::start_with("nobody", Some(gate_toml));
    let client = Client::open_file(&system.client_config()).unwrap();
    let answer = client
        .send_receive(&request("NOBODY", "R03", ""), None)
        .unwrap();
    assert_eq!(get(&answer.bytes, "MSH-3"), "HNGATE");
    assert_eq!(
        get(&answer.bytes, "MSA-3"),
        "HNPS007E Receiving application is not connected: NOBODY"
    );
}

#[test]
fn a_client_facility_may_not_serve() {
    let system = System::start("notaserver");
    system.runtime.block_on(async {
        let (mut stream, _) = raw_session(&system).await;
        let serve = Frame::Serve {
            applications: vec!["HNAPI-DEMO".into()],
        };
        write_frame(&mut stream, &serve).await.unwrap();
        let answer = read_frame(&mut stream, transport::DEFAULT_MAX_FRAME)
            .await
            .unwrap();
        assert_eq!(
            answer,
            Some(Frame::Refused {
                id: 0,
                reason: Refusal::NotAServer
            })
        );
    });
}

#[test]
fn a_server_facility_serves_only_the_names_hngard_records_for_it() {
    let system = System::start("serves");
    // A second server-role facility, recorded to serve OTHER-APP only, tries to take over
    // the demo server's name (the adversarial review: it got half its requests).
    const INTRUDER: &str = "BC00000097";
    let gard = hnapi::gard::Gard::open(&system.gard_dir()).unwrap();
    let code = gard
        .add_facility_serving(
            INTRUDER,
            "Another server",
            hnapi::gard::Role::Server,
            &["OTHER-APP".to_owned()],
            Duration::from_secs(600),
        )
        .unwrap();
    let credential = system
        .runtime
        .block_on(hnapi::client::register(
            &system.addr(),
            INTRUDER,
            &code,
            &gard.ca_pem().unwrap(),
            Duration::from_secs(10),
        ))
        .unwrap();
    let serve = |names: &[&str]| {
        system.runtime.block_on(async {
            let mut stream = session_as(&system, &credential).await;
            let serve = Frame::Serve {
                applications: names.iter().map(|n| (*n).to_owned()).collect(),
            };
            write_frame(&mut stream, &serve).await.unwrap();
            read_frame(&mut stream, transport::DEFAULT_MAX_FRAME)
                .await
                .unwrap()
        })
    };
    let refused = Some(Frame::Refused {
        id: 0,
        reason: Refusal::NotServed,
    });
    assert_eq!(serve(&["HNAPI-DEMO"]), refused);
    assert_eq!(
        serve(&["OTHER-APP", "HNAPI-DEMO"]),
        refused,
        "all or nothing"
    );
    assert_eq!(serve(&[]), refused);
    assert_eq!(serve(&["OTHER-APP"]), Some(Frame::Accepted));
    // Journaled, naming the names.
    let started = std::time::Instant::now();
    loop {
        let rows = gard
            .audit(&hnapi::gard::AuditFilter {
                kind: Some(hnapi::gard::AuditKind::Security),
                ..Default::default()
            })
            .unwrap();
        let refusals: Vec<_> = rows
            .iter()
            .filter(|r| r.code == "serve-refused" && r.facility == INTRUDER)
            .collect();
        if refusals.len() == 3 {
            assert!(refusals[0].detail.contains("HNAPI-DEMO"), "{refusals:#?}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{rows:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The sandbox's demo server, recorded for HNAPI-DEMO, serves it.
    let server = hnapi::client::Server::open_file(&system.sandbox().server_config()).unwrap();
    assert!(server.wait_connected(Duration::from_secs(5)).unwrap());
}

#[test]
fn a_server_application_that_does_not_answer_times_out() {
    let system = System::start("silentserver");
    let server = hnapi::client::Server::open_file(&system.sandbox().server_config()).unwrap();
    let client = Client::open_file(&system.client_config()).unwrap();
    // Wait until it is connected: a first request is received and answered.
    let first = request("HNAPI-DEMO", "R03", "");
    let waiting = std::thread::scope(|s| {
        let answering = s.spawn(|| {
            loop {
                if let Some(r) = server.receive(Duration::from_millis(100)).unwrap() {
                    server.respond(r.id, &ack(&r.bytes, "HNAPI-DEMO")).unwrap();
                    return;
                }
            }
        });
        let answer = send_when_served(&client, &first);
        answering.join().unwrap();
        answer
    });
    assert_eq!(get(&waiting.bytes, "MSA-1"), "AA");

    // Now it receives but never answers.
    let message = request("HNAPI-DEMO", "R03", "");
    let started = Instant::now();
    let answer = client
        .send_receive(&message, Some(Duration::from_secs(2)))
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(get(&answer.bytes, "MSH-3"), "HNGATE");
    assert!(
        get(&answer.bytes, "MSA-3").starts_with("TXFR024E"),
        "{}",
        get(&answer.bytes, "MSA-3")
    );
}
