//! One transaction, from the frame that carries it to the frame that answers it: the
//! rate limit, the envelope and the replay guard, admission ([`crate::gate::admit`]),
//! the duplicate check, delivery to the route's destination, the journal row and the log
//! line. The network side ([`super`]) hands it a request frame and sends what it returns.

use super::*;
use crate::gate::admit;

/// One transaction: open the envelope, answer the request, seal the answer.
pub(super) async fn transaction(
    state: &State,
    peer: &Peer,
    address: SocketAddr,
    id: u64,
    timeout_ms: u32,
    sealed: Vec<u8>,
) -> Frame {
    let started = Instant::now();
    let client_timeout = Duration::from_millis(u64::from(timeout_ms.max(1)));
    // An authenticated facility's refused envelope is journaled before the refusal
    // leaves (with `audit = "required"`); the refusal leaves either way.
    let refuse = |reason: Refusal| async move {
        state.metrics.refused(Refused::Envelope);
        let code = if reason == Refusal::Replayed {
            "replay"
        } else {
            "bad-envelope"
        };
        let row = crate::gard::AuditRecord::security(
            &peer.facility,
            &address.to_string(),
            "refused",
            code,
            format!("envelope refused: {reason}"),
        );
        if let Err(e) = state
            .audit
            .commit(vec![row], journal_wait(started, client_timeout))
            .await
        {
            log::error!(
                "audit: a refused envelope from facility {} was not journaled: {e}",
                peer.facility
            );
        }
        Frame::Refused { id, reason }
    };
    // The rate limit comes first: a request over it costs no cryptography and leaves
    // nothing behind (no replay entry, no journal row; the metrics count it).
    let settings = state.settings();
    let limits = &settings.config.limits;
    if limits.rate_limit_per_sec > 0.0
        && !state.within_rate(
            &peer.facility,
            limits.rate_limit_per_sec,
            limits.rate_limit_burst,
        )
    {
        state.metrics.refused(Refused::RateLimit);
        return Frame::Refused {
            id,
            reason: Refusal::RateLimited,
        };
    }
    match envelope::read_header(&sealed) {
        Ok(h) if h.facility == peer.facility && h.key_id == peer.key.id() => {}
        Ok(_) => {
            log::warn!(
                "security: facility {} sent an envelope naming another facility or key",
                peer.facility
            );
            return refuse(Refusal::EnvelopeRefused).await;
        }
        Err(e) => {
            log::warn!(
                "security: facility {} sent a malformed envelope: {e}",
                peer.facility
            );
            return refuse(Refusal::EnvelopeRefused).await;
        }
    }
    let opened = match envelope::open(&peer.key, &sealed, Direction::Request) {
        Ok(opened) => opened,
        Err(e) => {
            log::warn!(
                "security: envelope from facility {} refused: {e}",
                peer.facility
            );
            return refuse(Refusal::EnvelopeRefused).await;
        }
    };
    // Only an authentic envelope may take a place in the replay guard.
    let checked = state.replay_check(&peer.facility, &opened.header, limits);
    if let Err(e) = checked {
        log::warn!(
            "security: envelope from facility {} refused: {e}",
            peer.facility
        );
        return refuse(match e {
            envelope::EnvelopeError::Replayed => Refusal::Replayed,
            envelope::EnvelopeError::OutsideWindow => Refusal::OutsideWindow,
            _ => Refusal::EnvelopeRefused,
        })
        .await;
    }

    let mut security = None;
    let journal = state.audit.available();
    let (mut answer, mut line) = if journal {
        answer(
            state,
            peer,
            address,
            &opened.plaintext,
            client_timeout,
            &mut security,
        )
        .await
    } else {
        // Fail closed: nothing is passed on that could not be journaled.
        state.audit.refused_while_unavailable();
        state.metrics.refused(Refused::Journal);
        let request = admit::for_answer(&opened.plaintext);
        let ack = hl7::network_ack(
            request.as_ref(),
            NetworkComponent::Hngate,
            &settings.config.facility,
            NetworkCode::Hnps013E,
            None,
            &hl7::now_pacific(),
        );
        let control = request.as_ref().map(admit::control_id).unwrap_or_default();
        (
            ack,
            format!("control={control} outcome=AR code=HNPS013E (journal unavailable)"),
        )
    };
    let mut summary = Summary::of(&settings.config, &opened.plaintext, &answer);
    if journal {
        let blank = |v: &str| {
            if v == "-" {
                String::new()
            } else {
                v.to_owned()
            }
        };
        let row = crate::gard::AuditRecord {
            at: jiff::Timestamp::now(),
            kind: crate::gard::AuditKind::Transaction,
            facility: peer.facility.clone(),
            peer: address.to_string(),
            sending_application: summary.sending_application.clone(),
            control_id: summary.control_id.clone(),
            message_type: summary.message_type.clone(),
            route: blank(&summary.route),
            destination: blank(&summary.destination),
            outcome: blank(&summary.outcome),
            code: summary.code.clone(),
            latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            request_bytes: opened.plaintext.len() as u64,
            answer_bytes: answer.len() as u64,
            detail: String::new(),
        };
        let rows = security.into_iter().chain([row]).collect();
        // The answer leaves only once its row is kept (`audit = "required"`).
        if let Err(e) = state
            .audit
            .commit(rows, journal_wait(started, client_timeout))
            .await
        {
            log::error!(
                "audit: facility {} control={}: the answer was withheld, its row could not be \
                 journaled: {e}",
                peer.facility,
                summary.control_id
            );
            state.metrics.refused(Refused::Journal);
            let request = admit::for_answer(&opened.plaintext);
            answer = hl7::network_ack(
                request.as_ref(),
                NetworkComponent::Hngate,
                &settings.config.facility,
                NetworkCode::Hnps013E,
                Some("the answer was withheld: the receiver may have processed the request"),
                &hl7::now_pacific(),
            );
            line = format!(
                "control={} outcome=AR code=HNPS013E (journal failed: answer withheld)",
                summary.control_id
            );
            summary = Summary::of(&settings.config, &opened.plaintext, &answer);
        }
    }
    let outcome = line;
    let sealed_answer = envelope::seal(
        &peer.key,
        &peer.facility,
        Direction::Response,
        &opened.header.nonce,
        envelope::now_ms(),
        &answer,
    );
    let latency = started.elapsed();
    state
        .metrics
        .transaction(&summary.route, &summary.outcome, latency);
    log::info!(
        "facility={} {outcome} route={} destination={} answer={}{}{} in={} out={} ms={}",
        peer.facility,
        summary.route,
        summary.destination,
        summary.outcome,
        if summary.code.is_empty() { "" } else { " " },
        summary.code,
        opened.plaintext.len(),
        answer.len(),
        started.elapsed().as_millis()
    );
    match sealed_answer {
        Ok(s) => Frame::Response {
            id,
            envelope: s.bytes,
        },
        Err(e) => {
            log::error!(
                "sealing an answer for facility {} failed: {e}",
                peer.facility
            );
            refuse(Refusal::Internal).await
        }
    }
}

/// How long a transaction's journal row may take to commit: what is left of the
/// sender's time, and at least a moment.
fn journal_wait(started: Instant, client_timeout: Duration) -> Duration {
    client_timeout
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(200))
}

/// What a transaction was, for the metrics and the audit journal: ids, types, routes
/// and codes, never content.
struct Summary {
    /// The matching route's MSH-5 pattern (`*` for any), `-` when none matched.
    route: String,
    /// Where that route leads, `-` when none matched.
    destination: String,
    /// MSA-1 of the answer, `-` when it has none.
    outcome: String,
    /// The code that starts MSA-3 (`TXFR024E`, `HNHR517E`), when there is one.
    code: String,
    /// MSH-3, MSH-10 and MSH-9 of the request, as written (at most 64 bytes each, control
    /// characters escaped).
    sending_application: String,
    control_id: String,
    message_type: String,
}

impl Summary {
    fn of(config: &GateConfig, request: &[u8], answer: &[u8]) -> Self {
        let parsed = Message::parse(request).ok();
        let route = parsed.as_ref().and_then(|m| config.route(m).cloned());
        let msh = |n| {
            parsed
                .as_ref()
                .and_then(|m| m.raw(&Path::new(*b"MSH", n)))
                .map(|v| admit::printable(v, 64))
                .unwrap_or_default()
        };
        let reply = Message::parse(answer).ok();
        let msa = |n| reply.as_ref().and_then(|m| m.raw(&Path::new(*b"MSA", n)));
        let code = msa(3)
            .and_then(hl7::condition_code)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .unwrap_or_default();
        Self {
            route: route.as_ref().map_or("-".to_owned(), |r| {
                r.application.clone().unwrap_or("*".into())
            }),
            destination: route.map_or("-".to_owned(), |r| r.destination.to_string()),
            outcome: msa(1)
                .filter(|v| matches!(*v, b"AA" | b"AE" | b"AR" | b"CA" | b"CE" | b"CR"))
                .map_or("-".to_owned(), |v| String::from_utf8_lossy(v).into_owned()),
            code,
            sending_application: msh(3),
            control_id: msh(10),
            message_type: msh(9),
        }
    }
}

/// The answer to one request, and a log summary of it (no PHI: ids, types, codes).
async fn answer(
    state: &State,
    peer: &Peer,
    address: SocketAddr,
    request: &[u8],
    client_timeout: Duration,
    security: &mut Option<crate::gard::AuditRecord>,
) -> (Vec<u8>, String) {
    let settings = state.settings();
    let config = &settings.config;
    if config.trace_messages {
        log::debug!(
            "request from {}: {}",
            peer.facility,
            String::from_utf8_lossy(request).replace('\r', "\\r")
        );
    }
    let reject = |msg: Option<&Message<'_>>, code: NetworkCode, detail: Option<&str>| {
        let ack = hl7::network_ack(
            msg,
            NetworkComponent::Hngate,
            &config.facility,
            code,
            detail,
            &hl7::now_pacific(),
        );
        let control = msg.map(admit::control_id).unwrap_or_default();
        (
            ack,
            format!("control={control} outcome=AR code={}", code.code()),
        )
    };
    let admitted = match admit::admit(&peer.facility, config, request) {
        Ok(admitted) => admitted,
        Err(refused) => {
            let msg = admit::for_answer(request);
            if let Some(event) = refused.security {
                log::warn!(
                    "security: facility {} sent a request refused {} ({}): {}",
                    peer.facility,
                    refused.code.code(),
                    event,
                    refused.why
                );
                if event == "msh4-mismatch" {
                    state.metrics.refused(Refused::Msh4);
                } else {
                    state.metrics.refused(Refused::Admission);
                }
                let row = crate::gard::AuditRecord::security(
                    &peer.facility,
                    &address.to_string(),
                    "refused",
                    event,
                    format!(
                        "request refused {}: {} (control id {})",
                        refused.code.code(),
                        refused.why,
                        msg.as_ref().map(admit::control_id).unwrap_or_default()
                    ),
                );
                *security = Some(row);
            }
            return reject(msg.as_ref(), refused.code, refused.detail.as_deref());
        }
    };
    let route = &admitted.route;
    // From here on, only the canonical bytes: what is forwarded is what was checked.
    let request: &[u8] = &admitted.bytes;
    let Ok(msg) = Message::parse(request) else {
        // Admission parsed these very bytes.
        return reject(None, NetworkCode::Vldt014E, None);
    };
    let m = Some(&msg);
    let application = msg.msh(5).text().into_owned();
    if let Some(window) = route.duplicate_window {
        let key = DuplicateKey {
            control_id: msg.msh(10).text().into_owned(),
            facility: msg.msh(4).text().into_owned(),
            application: msg.msh(3).text().into_owned(),
        };
        let gard = state.gard.clone();
        let seen = tokio::task::spawn_blocking(move || gard.check_duplicate(&key, window)).await;
        match seen {
            Ok(Ok(true)) => {
                state.metrics.refused(Refused::Duplicate);
                let ack = hl7::network_ack_as(
                    m,
                    NetworkComponent::Hngate,
                    &config.facility,
                    hl7::AckCode::Error,
                    NetworkCode::Hnps009E,
                    None,
                    &hl7::now_pacific(),
                );
                let control = admit::control_id(&msg);
                return (
                    ack,
                    format!(
                        "control={control} app={} outcome=AE code=HNPS009E (duplicate)",
                        admit::printable(application.as_bytes(), 64)
                    ),
                );
            }
            Ok(Ok(false)) => {}
            // The duplicate window is a safeguard, not the transaction: when the
            // directory cannot answer, the request goes on, and the log says so.
            Ok(Err(e)) => log::error!("duplicate check failed, request passed on: {e}"),
            Err(e) => log::error!("duplicate check failed, request passed on: {e}"),
        }
    }

    // When the sender's timeout is the shorter, give up a little before it, so that the
    // sender gets HNGATE's TXFR024E (which says where the time went) rather than its own.
    let margin = (client_timeout / 10).min(Duration::from_secs(1));
    let timeout = route.timeout.min(client_timeout.saturating_sub(margin));
    let control = admit::control_id(&msg);
    let kind = admit::printable(msg.raw(&Path::new(*b"MSH", 9)).unwrap_or_default(), 64);
    let application = admit::printable(application.as_bytes(), 64);
    let delivered = match &route.destination {
        Destination::Sim => match state.sim.answer(&msg) {
            Some(answer) => Some(answer),
            None => {
                tokio::time::sleep(timeout).await;
                None
            }
        },
        Destination::App(name) => match state.deliver_to_app(name, request, timeout).await {
            Ok(answer) => Some(answer),
            Err(AppFailure::NoAnswer) => None,
            Err(AppFailure::NotConnected) => {
                let code = NetworkCode::Hnps007E;
                let note = route
                    .not_connected_hint
                    .as_deref()
                    .and_then(|hint| hl7::AppError::new(code.code(), hint).ok());
                let Some(note) = note else {
                    return reject(m, code, Some(name));
                };
                let ack = hl7::network_ack_noted(
                    m,
                    NetworkComponent::Hngate,
                    &config.facility,
                    code,
                    Some(name),
                    &note,
                    &hl7::now_pacific(),
                );
                let control = m.map(admit::control_id).unwrap_or_default();
                return (
                    ack,
                    format!("control={control} outcome=AR code={}", code.code()),
                );
            }
            Err(AppFailure::Envelope) => return reject(m, NetworkCode::Txfr029E, None),
            Err(AppFailure::NotHl7) => return reject(m, NetworkCode::Vldt014E, None),
        },
        Destination::Mllp(target) => {
            let Some(destination) = settings.mllp.get(target) else {
                log::error!("no pool for destination {}", route.destination);
                return reject(m, NetworkCode::Txfr024E, None);
            };
            let control_id = msg.raw(&Path::new(*b"MSH", 10)).unwrap_or_default();
            match destination.call(request, control_id, timeout).await {
                Ok(answer) => Some(answer),
                Err(MllpFailure::NotHl7) => {
                    log::warn!(
                        "{}: answered control={control} with something that is not an HL7 ACK",
                        destination.name()
                    );
                    return reject(m, NetworkCode::Vldt014E, None);
                }
                // Admission refuses such a request first; the encoder checks on its own.
                Err(MllpFailure::Unframeable(_)) => {
                    return reject(m, NetworkCode::Hnps010E, None);
                }
                Err(failure) => {
                    log::warn!("{} for control={control}: {failure}", destination.name());
                    None
                }
            }
        }
    };
    match delivered {
        Some(answer) => {
            if config.trace_messages {
                log::debug!(
                    "answer to {}: {}",
                    peer.facility,
                    String::from_utf8_lossy(&answer).replace('\r', "\\r")
                );
            }
            // Reading MSA-1 for the log line costs a parse; only when it is logged.
            let outcome = if log::log_enabled!(log::Level::Info) {
                Message::parse(&answer)
                    .map(|a| a.value(&Path::new(*b"MSA", 1)).text().into_owned())
                    .unwrap_or_default()
            } else {
                String::new()
            };
            (
                answer,
                format!("control={control} type={kind} app={application} outcome={outcome}"),
            )
        }
        None => {
            let (ack, _) = reject(m, NetworkCode::Txfr024E, None);
            (
                ack,
                format!(
                    "control={control} type={kind} app={application} outcome=AR code=TXFR024E (destination timed out)"
                ),
            )
        }
    }
}
