//! Registration and renewal keep only what HNGard would issue: `--ca` authenticates the
//! gateway, and what comes through that connection is checked against it too. The
//! impostor here holds the real gateway's certificate and key (as if stolen), so the TLS
//! handshake succeeds, and answers with certificates made for the facility's own key (so
//! only the trust checks can refuse them).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use common::{FACILITY, System};
use hnapi::client::{Credential, RegisterError};
use hnapi::transport::{Frame, read_frame, tls, write_frame};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::CertificateSigningRequestDer;
use tokio::io::AsyncWriteExt;
use zeroize::Zeroizing;

fn hnsecure() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hnsecure"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// HNGard's own CA, from its directory.
fn gard_issuer(gard_dir: &Path) -> Issuer<'static, KeyPair> {
    let key = std::fs::read_to_string(gard_dir.join("ca.key")).unwrap();
    let pem = std::fs::read_to_string(gard_dir.join("ca.pem")).unwrap();
    Issuer::from_ca_cert_pem(&pem, KeyPair::from_pem(&key).unwrap()).unwrap()
}

/// The impostor's own CA, named as HNGard's is: its certificate (PEM) and issuer.
fn rogue_ca() -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "HNSecure HNGard CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let pem = params.self_signed(&key).unwrap().pem();
    (pem, Issuer::new(params, key))
}

/// A certificate for the key in `csr` (DER), from `issuer`, with subject CN `cn` and these
/// extended key usages (none: no extension at all).
fn sign(
    csr: &[u8],
    issuer: &Issuer<'static, KeyPair>,
    cn: &str,
    eku: &[ExtendedKeyUsagePurpose],
) -> String {
    let mut request = CertificateSigningRequestParams::from_der(
        &CertificateSigningRequestDer::from(csr.to_vec()),
    )
    .unwrap();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, cn);
    request.params.distinguished_name = name;
    request.params.extended_key_usages = eku.to_vec();
    request.signed_by(issuer).unwrap().pem()
}

/// The certificate signing request a registration or renewal frame carries.
fn csr_of(frame: &Frame) -> &[u8] {
    match frame {
        Frame::RegisterRequest { csr, .. } | Frame::RenewRequest { csr } => csr,
        other => panic!("not a request with a CSR: {other:?}"),
    }
}

type Answer = dyn Fn(&Frame) -> Frame + Send + Sync;

/// A gateway impostor on 127.0.0.1 with the real gateway's certificate and key: it
/// greets with `Accepted` when `greet` (as the gateway does an authenticated client),
/// reads one frame and sends what `answer` makes of it. Returns its address.
fn impostor(system: &System, greet: bool, answer: Arc<Answer>) -> String {
    let gard = system.gard_dir();
    let read = |name: &str| std::fs::read(gard.join(name)).unwrap();
    let chain = tls::certificates_from_pem(&read("gate.pem")).unwrap();
    let key = tls::private_key_from_pem(&read("gate.key")).unwrap();
    let ca = tls::certificates_from_pem(&read("ca.pem")).unwrap();
    let config = tls::server_config(chain, key, &ca).unwrap();
    let listener = system
        .runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    system.runtime.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
            let answer = answer.clone();
            tokio::spawn(async move {
                let Ok(mut stream) = acceptor.accept(tcp).await else {
                    return;
                };
                if greet && write_frame(&mut stream, &Frame::Accepted).await.is_err() {
                    return;
                }
                if let Ok(Some(request)) = read_frame(&mut stream, 1 << 20).await {
                    let _ = write_frame(&mut stream, &answer(&request)).await;
                    let _ = stream.shutdown().await;
                }
            });
        }
    });
    addr
}

/// What the impostor puts in its registration answer.
struct Registration {
    name: &'static str,
    ca_pem: String,
    issuer: Arc<Issuer<'static, KeyPair>>,
    cn: &'static str,
    eku: Vec<ExtendedKeyUsagePurpose>,
    key: [u8; 32],
    /// What the refusal says; `None` for the one answer that is accepted.
    refused: Option<&'static str>,
}

fn register_cli(addr: &str, ca: &Path, out: &Path, code_file: &Path) -> Output {
    hnsecure()
        .args(["client", "register", "--gate", addr, "--facility", FACILITY])
        .arg("--code-file")
        .arg(code_file)
        .arg("--ca")
        .arg(ca)
        .arg("--out")
        .arg(out)
        .args(["--timeout-secs", "10"])
        .output()
        .unwrap()
}

#[test]
fn registration_refuses_answers_hngard_would_not_give_and_stores_nothing() {
    let system = System::start("register-trust");
    let gard_dir = system.gard_dir();
    let ca_path = gard_dir.join("ca.pem");
    let ca_pem = std::fs::read_to_string(&ca_path).unwrap();
    let real = Arc::new(gard_issuer(&gard_dir));
    let (rogue_pem, rogue) = rogue_ca();
    let rogue = Arc::new(rogue);
    let client_auth = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let random: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(151) ^ 0x3C);
    let case =
        |name, ca_pem: &String, issuer: &Arc<_>, cn, eku: &Vec<_>, key, refused| Registration {
            name,
            ca_pem: ca_pem.clone(),
            issuer: Arc::clone(issuer),
            cn,
            eku: eku.clone(),
            key,
            refused,
        };
    let not_given = Some("the CA certificate it returned is not the one given (--ca)");
    let not_from_ca = Some("is not a client certificate from the CA given");
    let cases = [
        // (a) its own CA, and a certificate from it.
        case(
            "own CA",
            &rogue_pem,
            &rogue,
            FACILITY,
            &client_auth,
            random,
            not_given,
        ),
        // (f) another CA than --ca, with a certificate from the right one.
        case(
            "other CA",
            &rogue_pem,
            &real,
            FACILITY,
            &client_auth,
            random,
            not_given,
        ),
        // The right CA, with a certificate from its own.
        case(
            "right CA, rogue certificate",
            &ca_pem,
            &rogue,
            FACILITY,
            &client_auth,
            random,
            not_from_ca,
        ),
        // (b) a certificate for another facility.
        case(
            "other facility",
            &ca_pem,
            &real,
            "BC00000099",
            &client_auth,
            random,
            Some("the certificate it returned names [\"BC00000099\"], not facility \"BC00000098\""),
        ),
        // (c) a server certificate (webpki refuses it), and one without any EKU (webpki
        // accepts it: the explicit check refuses it).
        case(
            "serverAuth only",
            &ca_pem,
            &real,
            FACILITY,
            &vec![ExtendedKeyUsagePurpose::ServerAuth],
            random,
            not_from_ca,
        ),
        case(
            "no EKU",
            &ca_pem,
            &real,
            FACILITY,
            &Vec::new(),
            random,
            Some("is not marked for client authentication"),
        ),
        // (d) an all-zero key, (e) one byte repeated.
        case(
            "zero key",
            &ca_pem,
            &real,
            FACILITY,
            &client_auth,
            [0; 32],
            Some("the envelope key it returned is one byte repeated"),
        ),
        case(
            "repeated key",
            &ca_pem,
            &real,
            FACILITY,
            &client_auth,
            [0x5A; 32],
            Some("the envelope key it returned is one byte repeated"),
        ),
        // What HNGard issues: accepted, which shows the impostor is otherwise believed.
        case(
            "as HNGard issues",
            &ca_pem,
            &real,
            FACILITY,
            &client_auth,
            random,
            None,
        ),
    ];
    let code_file = system.dir.join("code.txt");
    std::fs::write(&code_file, "K7QM-3XPD-9RTW-HC2N\n").unwrap();
    for c in cases {
        let Registration {
            name,
            ca_pem: answer_ca,
            issuer,
            cn,
            eku,
            key,
            refused,
        } = c;
        let answer: Arc<Answer> = Arc::new(move |request: &Frame| Frame::RegisterResponse {
            certificate_pem: sign(csr_of(request), &issuer, cn, &eku),
            ca_pem: answer_ca.clone(),
            key_id: 7,
            key: Zeroizing::new(key),
        });
        let addr = impostor(&system, false, answer);

        // Through the library: the error says why.
        let result = system.runtime.block_on(hnapi::client::register(
            &addr,
            FACILITY,
            "K7QM-3XPD-9RTW-HC2N",
            &ca_pem,
            Duration::from_secs(10),
        ));
        // Through the command: nothing is written.
        let out_dir = common::temp_dir("register-trust-out");
        let out = out_dir.join("credential.toml");
        let o = register_cli(&addr, &ca_path, &out, &code_file);
        let err = text(&o.stderr);
        match refused {
            Some(why) => {
                let e = result.unwrap_err();
                assert!(matches!(e, RegisterError::Untrusted(_)), "{name}: {e:?}");
                assert!(e.to_string().contains(why), "{name}: {e}");
                assert_eq!(o.status.code(), Some(1), "{name}: {err}");
                assert!(
                    err.contains("the gateway's answer was refused and nothing was stored")
                        && err.contains(why),
                    "{name}: {err}"
                );
                assert_eq!(
                    std::fs::read_dir(&out_dir).unwrap().count(),
                    0,
                    "{name}: nothing was written"
                );
            }
            None => {
                let credential = result.unwrap();
                assert_eq!(credential.ca_pem, ca_pem, "the CA given is stored");
                assert!(o.status.success(), "{name}: {err}");
                let stored = Credential::read(&out).unwrap();
                assert_eq!(stored.ca_pem, ca_pem);
                assert_eq!(stored.key.as_bytes(), &random);
            }
        }
        let _ = std::fs::remove_dir_all(&out_dir);
    }
}

/// A renewal answer: its name, the issuer, the CN, the EKUs, and what the refusal says
/// (`None` for the answer that is accepted).
type RenewCase<'a> = (
    &'static str,
    &'a Arc<Issuer<'static, KeyPair>>,
    &'static str,
    Vec<ExtendedKeyUsagePurpose>,
    Option<&'static str>,
);

#[test]
fn renewal_refuses_a_certificate_hngard_would_not_issue_and_keeps_the_credential() {
    let system = System::start("renew-trust");
    let gard_dir = system.gard_dir();
    let real = Arc::new(gard_issuer(&gard_dir));
    let rogue = Arc::new(rogue_ca().1);
    let client_auth = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let credential: PathBuf = system.credential();
    let before = std::fs::read(&credential).unwrap();
    let not_from_ca = Some("is not a client certificate from the CA given");
    let cases: [RenewCase; 5] = [
        // (a) a certificate from another CA.
        (
            "rogue CA",
            &rogue,
            FACILITY,
            client_auth.clone(),
            not_from_ca,
        ),
        // (b) for another facility.
        (
            "other facility",
            &real,
            "BC00000099",
            client_auth.clone(),
            Some("names [\"BC00000099\"], not facility \"BC00000098\""),
        ),
        // (c) not for client authentication.
        (
            "serverAuth only",
            &real,
            FACILITY,
            vec![ExtendedKeyUsagePurpose::ServerAuth],
            not_from_ca,
        ),
        (
            "no EKU",
            &real,
            FACILITY,
            Vec::new(),
            Some("is not marked for client authentication"),
        ),
        // What HNGard issues: accepted.
        (
            "as HNGard issues",
            &real,
            FACILITY,
            client_auth.clone(),
            None,
        ),
    ];
    for (name, issuer, cn, eku, refused) in cases {
        let issuer = Arc::clone(issuer);
        let answer: Arc<Answer> = Arc::new(move |request: &Frame| Frame::RenewResponse {
            certificate_pem: sign(csr_of(request), &issuer, cn, &eku),
        });
        let addr = impostor(&system, true, answer);
        let config = system.client_config_with(&[addr]);
        let o = hnsecure()
            .args(["client", "renew", "--config"])
            .arg(&config)
            .args(["--timeout-secs", "10"])
            .output()
            .unwrap();
        let err = text(&o.stderr);
        match refused {
            Some(why) => {
                assert_eq!(o.status.code(), Some(1), "{name}: {err}");
                assert!(
                    err.contains(
                        "renewal failed: the gateway's answer was refused and nothing was stored"
                    ) && err.contains(why),
                    "{name}: {err}"
                );
                assert!(!err.contains("rewritten"), "{name}: {err}");
                assert_eq!(
                    std::fs::read(&credential).unwrap(),
                    before,
                    "{name}: the credential is unchanged"
                );
            }
            None => {
                assert!(o.status.success(), "{name}: {err}");
                assert!(err.contains("rewritten (mode 0600)"), "{err}");
                assert_ne!(std::fs::read(&credential).unwrap(), before);
                Credential::read(&credential).unwrap();
            }
        }
    }
}
