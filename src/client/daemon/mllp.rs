//! The MLLP listener, for integration engines: many messages per connection, each
//! answered before the next is read (so answers come in order), optionally over TLS.
//!
//! The bytes of a message are never decoded: whatever MSH-18 names (UTF-8, ISO-8859-1,
//! …) reaches the receiver unchanged, and its answer comes back unchanged.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::{State, log_transaction};
use crate::client::config::SubjectPattern;
use crate::hl7::{self, NetworkCode, NetworkComponent};
use crate::xfer::mllp::{self, MllpError, MllpReadError, MllpReader};

/// Serves one MLLP connection (after TLS, when the listener has it) until the engine
/// closes it, a framing error, or shutdown.
pub(super) async fn serve(
    state: &State,
    tcp: TcpStream,
    peer: SocketAddr,
    stopping: watch::Receiver<bool>,
    changes: watch::Receiver<u64>,
) {
    let Some(acceptor) = &state.tls else {
        return exchange(state, tcp, peer, stopping, changes).await;
    };
    match tokio::time::timeout(state.listen.read_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(mut tls)) => {
            let subject = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(<[_]>::first)
                .map(|leaf| Subject::read(leaf));
            let allowed = state
                .listen
                .mllp_tls
                .as_ref()
                .and_then(|t| t.allowed_subjects.as_deref());
            match (subject, allowed) {
                (None, None) => log::info!("mllp {peer}: TLS established (no client certificate)"),
                (Some(subject), None) => {
                    log::info!("mllp {peer}: TLS established (client certificate {subject})");
                }
                (Some(subject), Some(allowed)) if subject.matches_any(allowed) => {
                    log::info!(
                        "mllp {peer}: TLS established (client certificate {subject}, in allowed_subjects)"
                    );
                }
                (subject, Some(_)) => {
                    let shown = subject.map_or_else(|| "none".to_owned(), |s| s.to_string());
                    log::warn!(
                        "mllp {peer}: client certificate {shown} matches no entry of listen.mllp_tls.allowed_subjects; closed"
                    );
                    let _ = tokio::time::timeout(state.listen.read_timeout, tls.shutdown()).await;
                    return;
                }
            }
            exchange(state, tls, peer, stopping, changes).await;
        }
        Ok(Err(e)) => log::warn!("mllp {peer}: TLS handshake failed: {e}"),
        Err(_) => log::warn!("mllp {peer}: TLS handshake timed out"),
    }
}

/// What an engine's client certificate names, for `allowed_subjects` and the log:
/// its subject's common names, and its subject alternative names (DNS, IP).
#[derive(Debug, Default, PartialEq, Eq)]
struct Subject {
    common_names: Vec<String>,
    dns: Vec<String>,
    ips: Vec<IpAddr>,
    /// The certificate could not be parsed (rustls verified it, so this is unexpected):
    /// it matches nothing.
    unreadable: bool,
}

impl Subject {
    /// Reads the names of the DER certificate `der`.
    fn read(der: &[u8]) -> Self {
        use x509_parser::extensions::GeneralName;
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            return Self {
                unreadable: true,
                ..Self::default()
            };
        };
        let mut subject = Self {
            common_names: cert
                .subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
                .collect(),
            ..Self::default()
        };
        match cert.subject_alternative_name() {
            Ok(Some(san)) => {
                for name in &san.value.general_names {
                    match name {
                        GeneralName::DNSName(dns) => subject.dns.push((*dns).to_owned()),
                        GeneralName::IPAddress(bytes) => match bytes.len() {
                            4 => subject.ips.push(IpAddr::from(
                                <[u8; 4]>::try_from(*bytes).unwrap_or_default(),
                            )),
                            16 => subject.ips.push(IpAddr::from(
                                <[u8; 16]>::try_from(*bytes).unwrap_or_default(),
                            )),
                            _ => {}
                        },
                        _ => {}
                    }
                }
            }
            Ok(None) => {}
            // Two SAN extensions, or a broken one: trust none of its names.
            Err(_) => subject.unreadable = true,
        }
        subject
    }

    /// True when one of `patterns` names this subject.
    fn matches_any(&self, patterns: &[SubjectPattern]) -> bool {
        !self.unreadable
            && patterns.iter().any(|p| match p {
                SubjectPattern::CommonName(cn) => self.common_names.iter().any(|c| c == cn),
                SubjectPattern::Dns(name) => self.dns.iter().any(|d| d.eq_ignore_ascii_case(name)),
                SubjectPattern::Ip(ip) => self
                    .ips
                    .iter()
                    .any(|i| super::allow::canonical(*i) == super::allow::canonical(*ip)),
            })
    }
}

impl std::fmt::Display for Subject {
    /// `CN=lab-1, dns:lab.example, ip:10.1.2.3`, each name escaped and cut to 64
    /// characters (the names come from the peer).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.unreadable {
            return f.write_str("(unreadable)");
        }
        let shown = |text: &str| {
            let mut out: String = text
                .chars()
                .take(64)
                .flat_map(char::escape_default)
                .collect();
            if text.chars().count() > 64 {
                out.push('…');
            }
            out
        };
        let names: Vec<String> = self
            .common_names
            .iter()
            .map(|cn| format!("CN={}", shown(cn)))
            .chain(self.dns.iter().map(|d| format!("dns:{}", shown(d))))
            .chain(self.ips.iter().map(|ip| format!("ip:{ip}")))
            .collect();
        if names.is_empty() {
            f.write_str("(no names)")
        } else {
            f.write_str(&names.join(", "))
        }
    }
}

/// How a wait for the next message ended.
enum Next {
    Message(Vec<u8>),
    /// The engine closed the connection between messages.
    Closed,
    /// The daemon is shutting down and the engine is between messages.
    Stopping,
    /// No message began within the idle timeout.
    Idle,
    /// A reload of the allow-list no longer allows the engine's host (logged).
    Revoked,
    /// The engine stopped sending in the middle of a message.
    Stalled,
    /// The engine sent a message so slowly that it did not arrive within the
    /// transaction's time (a peer dribbling a byte at a time).
    TooSlow,
    Failed(MllpReadError),
}

/// A reader that remembers when it last gave bytes: silence in the middle of a message
/// counts from the last byte, so the engine is answered `read_timeout_secs` after it,
/// neither earlier nor later.
struct Watched<R> {
    inner: R,
    last_byte: Instant,
}

impl<R: AsyncRead + Unpin> AsyncRead for Watched<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last_byte = Instant::now();
        }
        polled
    }
}

async fn next<R: AsyncRead + Unpin>(
    state: &State,
    reader: &mut MllpReader<Watched<R>>,
    peer: SocketAddr,
    stopping: &mut watch::Receiver<bool>,
    changes: &mut watch::Receiver<u64>,
) -> Next {
    // Idle: no message since the last answer (or the connection's start). Bytes between
    // frames do not count: a peer cannot hold its place by sending line ends.
    let idle_by = Instant::now() + state.listen.idle_timeout;
    // Shutdown closes an engine's connection between messages, not in the middle of one.
    let mut watch_stop = true;
    // A message, once begun, must arrive whole within the transaction's time, as an
    // HL7Xfer request must: each read within the read timeout is not enough, since a peer
    // that dribbles a byte at a time would hold the connection for ever. The begin is
    // known to within one read timeout: the start of the wait in which it was first seen.
    let mut began: Option<Instant> = None;
    loop {
        let waiting_since = Instant::now();
        let by = match began {
            // In a message: read_timeout after its last byte.
            Some(began) => {
                (began + state.timeout).min(reader.get_mut().last_byte + state.listen.read_timeout)
            }
            None => (waiting_since + state.listen.read_timeout).min(idle_by),
        };
        tokio::select! {
            read = tokio::time::timeout_at(by.into(), reader.next()) => match read {
                Ok(Ok(Some(message))) => return Next::Message(message),
                Ok(Ok(None)) => return Next::Closed,
                Ok(Err(e)) => return Next::Failed(e),
                Err(_) => {
                    // Idle between messages is normal for an engine; silence in the
                    // middle of one is not.
                    if !reader.is_between_frames() {
                        if reader.get_mut().last_byte.elapsed() >= state.listen.read_timeout {
                            return Next::Stalled;
                        }
                        if began.get_or_insert(waiting_since).elapsed() >= state.timeout {
                            return Next::TooSlow;
                        }
                    } else if Instant::now() >= idle_by {
                        return Next::Idle;
                    }
                }
            },
            () = crate::transport::until_true(stopping), if watch_stop => {
                if reader.is_between_frames() {
                    return Next::Stopping;
                }
                watch_stop = false;
            }
            // In the middle of a message too: a removed host sends nothing more.
            () = super::revoked(state, "mllp", peer, changes) => return Next::Revoked,
        }
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    state: &State,
    stream: S,
    peer: SocketAddr,
    mut stopping: watch::Receiver<bool>,
    mut changes: watch::Receiver<u64>,
) {
    let (reader, mut writer) = tokio::io::split(stream);
    let reader = Watched {
        inner: reader,
        last_byte: Instant::now(),
    };
    let mut reader = MllpReader::new(reader, state.listen.max_message_bytes);
    let mut out = Vec::new();
    loop {
        let message = match next(state, &mut reader, peer, &mut stopping, &mut changes).await {
            Next::Message(m) => m,
            Next::Closed => return,
            Next::Stopping => {
                log::debug!("mllp {peer}: closed for shutdown");
                let _ = writer.shutdown().await;
                return;
            }
            Next::Idle => {
                log::info!(
                    "mllp {peer}: no message for {} s (idle_timeout_secs); closed",
                    state.listen.idle_timeout.as_secs()
                );
                let _ = tokio::time::timeout(state.listen.read_timeout, writer.shutdown()).await;
                return;
            }
            Next::Revoked => {
                let _ = tokio::time::timeout(state.listen.read_timeout, writer.shutdown()).await;
                return;
            }
            Next::Stalled => {
                let error = format!(
                    "stopped sending in the middle of a message for {} s",
                    state.listen.read_timeout.as_secs()
                );
                return refuse(state, reader, writer, peer, NetworkCode::Txfr039E, &error).await;
            }
            Next::TooSlow => {
                let error = format!(
                    "took more than {} s to send one message",
                    state.timeout.as_secs()
                );
                return refuse(state, reader, writer, peer, NetworkCode::Txfr039E, &error).await;
            }
            Next::Failed(MllpReadError::Io(e)) => {
                log::info!("mllp {peer}: connection failed: {e}");
                return;
            }
            Next::Failed(MllpReadError::Mllp(e)) => {
                let code = match e {
                    MllpError::TooLarge { .. } => NetworkCode::Xfer003E,
                    MllpError::EndedInFrame { .. } => NetworkCode::Txfr039E,
                    _ => NetworkCode::Xfer004E,
                };
                return refuse(state, reader, writer, peer, code, &e.to_string()).await;
            }
        };
        let started = Instant::now();
        let answer = state.core.answer(&message, Some(state.timeout)).await;
        log_transaction("mllp", peer, &message, &answer, started);
        out.clear();
        if let Err(e) = mllp::encode(&answer.bytes, &mut out) {
            // The receiver's answer holds a framing byte: framed as it is, the engine
            // would read something else. It hears an AR from HNCLIENT instead.
            log::warn!(
                "mllp {peer}: the answer cannot be framed ({e}); answered AR VLDT014E (HNCLIENT)"
            );
            let request = hl7::Message::parse(&message).ok();
            let ack = |request: Option<&hl7::Message<'_>>| {
                hl7::network_ack(
                    request,
                    NetworkComponent::Hnclient,
                    state.facility(),
                    NetworkCode::Vldt014E,
                    Some("the answer holds MLLP framing bytes"),
                    &hl7::now_pacific(),
                )
            };
            out.clear();
            if mllp::encode(&ack(request.as_ref()), &mut out).is_err() {
                // Fields copied from the request held one too: an ACK that names none.
                out.clear();
                if mllp::encode(&ack(None), &mut out).is_err() {
                    return;
                }
            }
        }
        let written = tokio::time::timeout(state.listen.read_timeout, writer.write_all(&out)).await;
        if !matches!(written, Ok(Ok(()))) {
            log::info!("mllp {peer}: gone before its answer was sent");
            return;
        }
    }
}

/// Answers broken framing with an AR from `HNCLIENT` (no message could be read, so
/// none is named), then closes: after a framing error the stream cannot be trusted.
async fn refuse<R, W>(
    state: &State,
    mut reader: MllpReader<R>,
    mut writer: W,
    peer: SocketAddr,
    code: NetworkCode,
    error: &str,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    log::warn!(
        "mllp {peer}: {error}; answered AR {} (HNCLIENT)",
        code.code()
    );
    let ack = hl7::network_ack(
        None,
        NetworkComponent::Hnclient,
        state.facility(),
        code,
        None,
        &hl7::now_pacific(),
    );
    let mut out = Vec::new();
    // Built from nothing the engine sent, the ACK holds no framing byte.
    if mllp::encode(&ack, &mut out).is_err() {
        return;
    }
    let written = tokio::time::timeout(state.listen.read_timeout, writer.write_all(&out)).await;
    if matches!(written, Ok(Ok(()))) {
        // As `close_gently`: unread bytes at close would reset the connection and could
        // destroy the answer before the engine reads it.
        let _ = writer.shutdown().await;
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            while matches!(reader.get_mut().read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(cn: Option<&str>, sans: &[&str]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn patterns(list: &[&str]) -> Vec<SubjectPattern> {
        list.iter()
            .map(|p| SubjectPattern::parse(p).unwrap())
            .collect()
    }

    #[test]
    fn client_subjects_match_by_common_name_dns_name_or_ip() {
        let lab = Subject::read(&certificate(Some("lab-1"), &["Lab.Example", "10.1.2.3"]));
        assert_eq!(lab.to_string(), "CN=lab-1, dns:Lab.Example, ip:10.1.2.3");
        assert!(lab.matches_any(&patterns(&["CN=lab-1"])));
        assert!(!lab.matches_any(&patterns(&["CN=LAB-1", "CN=lab-10", "CN=lab"])));
        assert!(
            lab.matches_any(&patterns(&["dns:lab.example"])),
            "DNS ignores case"
        );
        assert!(!lab.matches_any(&patterns(&["dns:example", "dns:lab-1"])));
        assert!(lab.matches_any(&patterns(&["ip:10.1.2.3"])));
        assert!(lab.matches_any(&patterns(&["ip:::ffff:10.1.2.3"])));
        assert!(!lab.matches_any(&patterns(&["ip:10.1.2.4", "CN=Lab.Example"])));
        let bare = Subject::read(&certificate(None, &[]));
        assert_eq!(bare.to_string(), "(no names)");
        assert!(!bare.matches_any(&patterns(&["CN=lab-1", "dns:lab.example"])));
        let odd = Subject::read(&certificate(Some("a\nb"), &[]));
        assert_eq!(odd.to_string(), "CN=a\\nb", "control characters escaped");
        let junk = Subject::read(b"not a certificate");
        assert!(junk.unreadable && !junk.matches_any(&patterns(&["CN=lab-1"])));
    }
}
