//! The simulator destination `sim`: answers like the Ministry's applications of Volume 5,
//! so that vendors can test their HL7 without a Ministry connection.
//!
//! A [`Simulator`] is pure logic: it takes a parsed request and returns the bytes of the
//! answer (canonical ER7, CR after every segment). It keeps a small client registry in
//! memory — persons by PHN — for as long as it lives, shared by every thread that holds
//! it, and logs nothing.
//!
//! # What it answers
//!
//! The simulator looks at MSH-5 (receiving application) and MSH-9.1 (message type); the
//! trigger event in MSH-9.2 is not examined. MSH-5 is compared exactly (healthnetBC
//! codes are upper case, Volume 5 2.4.4).
//!
//! | MSH-5 | MSH-9.1 | transaction | answer when all is well | answer's MSH-9 |
//! |---|---|---|---|---|
//! | `RAIRCRD-NW-PRSN` | `R02` | Record New Person (2.5.3) | `AA`, three `HJMB001I SUCCESSFULLY COMPLETED` ERRs, `PID\|\|<new PHN>^^^BC^PH^MOH`, `ZIA\|\|\|\|\|<address 1–24>^^^^^Y^<today>^^^^^N` | the request's (`R02`) |
//! | `RAIGT-PRSN-DMGR` | `R03` | Get Person, by the PHN in PID-2 | `AA`, one `HJMB001I` ERR, `PID\|\|<PHN>^^^BC^PH^MOH\|\|\|<SURNAME>^<GIVEN>\|\|<BIRTH DATE>\|<SEX>`, `ZIA\|\|\|\|\|<SURNAME>^<GIVEN>\|<address as received>` | the request's (`R03`) |
//! | `RAIEND-PYR-RL` | `R35` | End Payer Relationship (2.5.4) | `AA`, one `HJMB001I` ERR | the request's (`R35`) |
//! | `RAICOVPART-ENQ` | `R46` | Update Premium Payment Periods, `R46^Z26` (2.5.5) | `AA`, one `HJMB001I` ERR | the request's (`R46^Z26`) |
//! | `PHCPEND-OVRD` | `R75` | Override Pending Registration, `R75^Z62` (2.5.6) | `AA`, one `HJMB001I` ERR | `ACK^<trigger>` (`ACK^Z62`) |
//! | `HNSIM-NORESPONSE` | any | never answers, so a sender can watch its timeout (2.6) | none: [`Simulator::answer`] returns `None` | — |
//! | `HNSIM-ECHO` | any | a loopback test: the answer is as large as the request | `AA`, one `HJMB001I` ERR, then every segment of the request after its MSH | `ACK^<trigger>` |
//! | anything else | any | not supported | `AR`, `HNSM999E TRANSACTION NOT SUPPORTED BY THE SIMULATOR` | `ACK^<trigger>` |
//!
//! The same application with another message type (an `R02` sent to `RAIGT-PRSN-DMGR`)
//! is "anything else". [`SUPPORTED`] lists the five pairs.
//!
//! A supported transaction is checked in this order; the first rule that applies gives
//! the answer, whose MSH-9 is the transaction's as in the table above:
//!
//! | condition | MSA-1 | code and text (MSA-3, first ERR) |
//! |---|---|---|
//! | a PHN in PID-2 (a repetition with assigning authority `BC` and type `PH`) fails [`phn_error`]: not 10 digits, not starting with 9, or a wrong mod-11 check digit | `AE` | `HNHR520E PHN FAILS CHECK DIGIT VALIDATION` |
//! | R03, R35, R46, R75 without a PHN in PID-2 | `AE` | `HNHR521E REQUIRED FIELD MISSING: PID-2` |
//! | R02 without a surname, or without a birth date | `AE` | `HNHR521E REQUIRED FIELD MISSING: SURNAME` and/or `… BIRTH DATE`, one ERR per missing field |
//! | R02 for a person already recorded: same surname, given name and birth date, ignoring case | `AE` | `HNHR517E DUPLICATE CLIENT FOUND ON DATABASE - CLIENT NOT ADDED` |
//! | R02 when the simulator's PHN range is used up | `AR` | `HNSM998E SIMULATOR HAS NO MORE PHNS TO ASSIGN` |
//! | R03 for a PHN the simulator never assigned | `AE` | `HNHR510E CLIENT NOT FOUND ON DATABASE` |
//! | otherwise | `AA` | `HJMB001I SUCCESSFULLY COMPLETED` (three times for R02, as in 2.5.3) |
//!
//! Every answer is an [`application_ack`]: MSH-3/4 and MSH-5/6 are the request's MSH-5/6
//! and MSH-3/4, MSH-7 is the time stamp (Pacific), MSH-8 and MSH-11/12 are copied, MSH-10
//! is a new control id, and MSA-2 is the request's MSH-10. MSA-3 is the first code
//! immediately followed by its text (`HJMB001ISUCCESSFULLY COMPLETED`), and each code
//! has its own `ERR|^^^CODE&TEXT` (2.4.11). No text carries PHI.
//!
//! # Where R02 finds the person
//!
//! Volume 5's example (2.5.3) puts the name in ZIA-5 and the birth date and sex at PID-5
//! and PID-6 (`PID|||||19730515|M`); standard HL7 has the name at PID-5, the birth date
//! at PID-7 and the sex at PID-8. Both are accepted:
//!
//! - **name**: ZIA-5 when it holds data, otherwise PID-5 unless PID-5 is an 8-digit date;
//!   the surname is component 1, the given name component 2 (first subcomponent of each).
//!   A given name is not required.
//! - **birth date**: the first 8 digits of PID-7 (a time stamp may follow them),
//!   otherwise PID-5 when it is exactly 8 digits. A value that does not start with 8
//!   digits counts as missing.
//! - **sex**: PID-8, otherwise PID-6 but only when the birth date came from PID-5 (in
//!   standard HL7, PID-6 is the mother's maiden name).
//! - **address**: the first repetition of ZIA-6, every component and subcomponent, decoded,
//!   so that an R03 sent with other delimiters gets it back correctly.
//!
//! # PHNs
//!
//! New persons get PHNs from a range no real example uses: digits 2 to 9 count up from
//! `90000000` and numbers without a valid check digit are skipped, so the first PHNs are
//! `9900000004`, `9900000011`, `9900000029`, … Every PHN is 10 digits, starts with 9 and
//! has a correct mod-11 check digit ([`phn_check_digit`]); no two persons share one.
//!
//! ```
//! use hnapi::gate::sim::Simulator;
//! use hnapi::hl7::Message;
//!
//! let sim = Simulator::new();
//! let request = Message::parse(b"MSH|^~\\&|ADT1|NF20|RAIRCRD-NW-PRSN|BC0003000|19990531144853|Train96|R02|19980915000020|D|2.3\rPID|||||19730515|M\rZIA|||||DONOGHUE^JAMES\r")?;
//! let answer = sim.answer_at(&request, "20030717140908", "1232420").expect("R02 is answered");
//! let answer = Message::parse(&answer)?;
//! assert_eq!(answer.value(&"MSA-1".parse()?).text(), "AA");
//! assert_eq!(answer.value(&"PID-2.1".parse()?).text(), "9900000004");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::hl7::{
    AckCode, AppError, Delimiters, Leaf, Message, MessageBuilder, Path, SegmentBuilder,
    application_ack, escape, new_control_id, now_pacific, phn_check_digit, phn_error,
};

/// The receiving application (MSH-5) that never answers: a request routed to the
/// simulator with this MSH-5 gets no answer at all, so a sender can test its timeout.
pub const NO_RESPONSE_APPLICATION: &str = "HNSIM-NORESPONSE";

/// The receiving application (MSH-5) that answers AA and echoes every segment of the
/// request after its MSH, so that a sender can test with answers as large as requests.
pub const ECHO_APPLICATION: &str = "HNSIM-ECHO";

/// MSH-5 of R02 Record New Person (2.5.3).
pub const RECORD_NEW_PERSON_APPLICATION: &str = "RAIRCRD-NW-PRSN";
/// MSH-5 of R03 Get Person (demographics by PHN).
pub const GET_PERSON_APPLICATION: &str = "RAIGT-PRSN-DMGR";
/// MSH-5 of R35 End Payer Relationship (2.5.4).
pub const END_PAYER_RELATIONSHIP_APPLICATION: &str = "RAIEND-PYR-RL";
/// MSH-5 of R46^Z26 Update Premium Payment Periods (2.5.5).
pub const UPDATE_PREMIUM_PAYMENT_APPLICATION: &str = "RAICOVPART-ENQ";
/// MSH-5 of R75^Z62 Override Pending Registration (2.5.6).
pub const OVERRIDE_PENDING_APPLICATION: &str = "PHCPEND-OVRD";

/// Every (receiving application, message type) pair the simulator answers, MSH-5 and
/// MSH-9.1. [`NO_RESPONSE_APPLICATION`] is not listed: it takes any message type.
pub const SUPPORTED: [(&str, &str); 5] = [
    (RECORD_NEW_PERSON_APPLICATION, "R02"),
    (GET_PERSON_APPLICATION, "R03"),
    (END_PAYER_RELATIONSHIP_APPLICATION, "R35"),
    (UPDATE_PREMIUM_PAYMENT_APPLICATION, "R46"),
    (OVERRIDE_PENDING_APPLICATION, "R75"),
];

/// The confirmation code of a transaction that succeeded (2.4.11, 2.5.3–2.5.6).
pub const SUCCESS_CODE: &str = "HJMB001I";
/// The text of [`SUCCESS_CODE`].
pub const SUCCESS_TEXT: &str = "SUCCESSFULLY COMPLETED";
/// R03 for a PHN the simulator does not know.
pub const NOT_FOUND_CODE: &str = "HNHR510E";
/// The text of [`NOT_FOUND_CODE`].
pub const NOT_FOUND_TEXT: &str = "CLIENT NOT FOUND ON DATABASE";
/// R02 for a person already recorded (2.4.11).
pub const DUPLICATE_CODE: &str = "HNHR517E";
/// The text of [`DUPLICATE_CODE`].
pub const DUPLICATE_TEXT: &str = "DUPLICATE CLIENT FOUND ON DATABASE - CLIENT NOT ADDED";
/// A PHN in PID-2 that is not a valid BC PHN.
pub const CHECK_DIGIT_CODE: &str = "HNHR520E";
/// The text of [`CHECK_DIGIT_CODE`].
pub const CHECK_DIGIT_TEXT: &str = "PHN FAILS CHECK DIGIT VALIDATION";
/// A field the transaction needs is missing.
pub const MISSING_FIELD_CODE: &str = "HNHR521E";
/// The text of [`MISSING_FIELD_CODE`]; `: ` and the field's name follow it
/// (`PID-2`, `SURNAME`, `BIRTH DATE`), never its value.
pub const MISSING_FIELD_TEXT: &str = "REQUIRED FIELD MISSING";
/// The simulator has assigned every PHN of its range (about 8 million).
pub const PHNS_EXHAUSTED_CODE: &str = "HNSM998E";
/// The text of [`PHNS_EXHAUSTED_CODE`].
pub const PHNS_EXHAUSTED_TEXT: &str = "SIMULATOR HAS NO MORE PHNS TO ASSIGN";
/// An application or message type the simulator does not handle (see [`SUPPORTED`]).
pub const NOT_SUPPORTED_CODE: &str = "HNSM999E";
/// The text of [`NOT_SUPPORTED_CODE`].
pub const NOT_SUPPORTED_TEXT: &str = "TRANSACTION NOT SUPPORTED BY THE SIMULATOR";

/// The field names [`MISSING_FIELD_TEXT`] is completed with.
const MISSING_PHN: &str = "PID-2";
const MISSING_SURNAME: &str = "SURNAME";
const MISSING_BIRTH_DATE: &str = "BIRTH DATE";

/// Digits 2 to 9 of the first PHN the simulator considers; see the module docs.
const FIRST_PHN_BODY: u32 = 90_000_000;
/// Digits 2 to 9 of the last.
const LAST_PHN_BODY: u32 = 99_999_999;

/// A simulated Ministry receiving system. Cheap to create; share one per gateway
/// (it is `Sync`), since R03 finds only persons recorded by the same simulator.
#[derive(Default)]
pub struct Simulator {
    state: Mutex<State>,
}

/// The client registry: persons by PHN, their identities, and where the next PHN is.
#[derive(Default)]
struct State {
    persons: HashMap<String, Person>,
    /// Identity (upper-cased names and birth date) to PHN, for the duplicate check.
    identities: HashMap<Identity, String>,
    /// How far past [`FIRST_PHN_BODY`] the next PHN to try is.
    next: u32,
}

impl State {
    /// A PHN not assigned before, or `None` when the range is used up.
    fn allocate_phn(&mut self) -> Option<String> {
        loop {
            let body = FIRST_PHN_BODY.checked_add(self.next)?;
            if body > LAST_PHN_BODY {
                return None;
            }
            self.next += 1;
            let digits = format!("{body:08}");
            if let Some(check) = phn_check_digit(digits.as_bytes()) {
                return Some(format!("9{digits}{check}"));
            }
        }
    }
}

/// Who a person is for the duplicate check. No `Debug`: it is PHI.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Identity {
    surname: Vec<u8>,
    given: Vec<u8>,
    birth_date: String,
}

/// The address: components, each a list of subcomponents, decoded.
type Address = Vec<Vec<Leaf>>;

/// What R02 recorded; decoded values, written again with each answer's delimiters.
/// No `Debug`: it is PHI.
#[derive(Clone)]
struct Person {
    surname: Vec<u8>,
    given: Vec<u8>,
    birth_date: String,
    sex: Vec<u8>,
    address: Address,
}

impl fmt::Debug for Simulator {
    /// Counts only: the registry holds PHI.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulator")
            .field("persons", &self.person_count())
            .finish_non_exhaustive()
    }
}

/// The transactions the simulator handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transaction {
    RecordNewPerson,
    GetPerson,
    EndPayerRelationship,
    UpdatePremiumPayment,
    OverridePending,
}

impl Transaction {
    const ALL: [Self; 5] = [
        Self::RecordNewPerson,
        Self::GetPerson,
        Self::EndPayerRelationship,
        Self::UpdatePremiumPayment,
        Self::OverridePending,
    ];

    fn of(request: &Message<'_>) -> Option<Self> {
        let application = request.msh(5);
        let message_type = request.value(&Path::new(*b"MSH", 9).with_component(1));
        let (application, message_type) = (application.data()?, message_type.data()?);
        Self::ALL
            .into_iter()
            .zip(SUPPORTED)
            .find(|(_, (a, m))| application == a.as_bytes() && message_type == m.as_bytes())
            .map(|(t, _)| t)
    }

    /// True when the answer's MSH-9 is the request's; false for `ACK^<trigger>` (2.5.6).
    fn echoes_message_type(self) -> bool {
        self != Self::OverridePending
    }
}

/// An answer before it is written.
struct Reply {
    code: AckCode,
    errors: Vec<AppError>,
    segments: Vec<SegmentBuilder>,
    /// MSH-9 is the request's rather than `ACK^<trigger>`.
    echo_type: bool,
}

impl Reply {
    fn new(code: AckCode, errors: Vec<AppError>) -> Self {
        Self {
            code,
            errors,
            segments: Vec::new(),
            echo_type: false,
        }
    }

    fn success(times: usize) -> Self {
        Self::new(
            AckCode::Accept,
            vec![app_error(SUCCESS_CODE, SUCCESS_TEXT); times],
        )
    }

    fn error(code: &str, text: &str) -> Self {
        Self::new(AckCode::Error, vec![app_error(code, text)])
    }

    fn missing(fields: &[&str]) -> Self {
        let errors = fields
            .iter()
            .map(|f| app_error(MISSING_FIELD_CODE, &format!("{MISSING_FIELD_TEXT}: {f}")))
            .collect();
        Self::new(AckCode::Error, errors)
    }

    fn write(self, request: &Message<'_>, timestamp: &str, control_id: &str) -> Vec<u8> {
        let mut ack = application_ack(request, self.code, &self.errors, control_id, timestamp);
        // No let chains: the crate's rust-version is 1.85.
        if let Some(raw) = request
            .raw(&Path::new(*b"MSH", 9))
            .filter(|_| self.echo_type)
        {
            let message_type = ack.raw_leaf(request.delimiters(), raw);
            ack.msh().set(9, message_type);
        }
        for segment in self.segments {
            ack.push(segment);
        }
        ack.to_bytes()
    }
}

/// An application error from the constants of this module. Their codes are well formed
/// and their texts short; a test checks every one, so this cannot fail.
fn app_error(code: &str, text: &str) -> AppError {
    AppError::new(code, text).expect("the simulator's codes and texts are valid")
}

impl Simulator {
    /// A simulator with an empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many persons R02 has recorded.
    pub fn person_count(&self) -> usize {
        self.state().persons.len()
    }

    /// The answer to `request`, or `None` when the simulator never answers
    /// (receiving application [`NO_RESPONSE_APPLICATION`]). MSH-7 is now (Pacific),
    /// MSH-10 a new id.
    pub fn answer(&self, request: &Message<'_>) -> Option<Vec<u8>> {
        self.answer_at(request, &now_pacific(), &new_control_id())
    }

    /// The same with the time stamp (MSH-7) and control id (MSH-10) given, for tests and
    /// reproducible demos. The date R02 writes in ZIA-5.30 is the first 8 characters of
    /// `timestamp` when they are digits, otherwise today's Pacific date.
    pub fn answer_at(
        &self,
        request: &Message<'_>,
        timestamp: &str,
        control_id: &str,
    ) -> Option<Vec<u8>> {
        if request.msh(5).data() == Some(NO_RESPONSE_APPLICATION.as_bytes()) {
            return None;
        }
        if request.msh(5).data() == Some(ECHO_APPLICATION.as_bytes()) {
            let success = [app_error(SUCCESS_CODE, SUCCESS_TEXT)];
            let mut echo =
                application_ack(request, AckCode::Accept, &success, control_id, timestamp);
            if *request.delimiters() == request.delimiters().complete() {
                // The answer is written with the request's delimiters: its segments can
                // be copied as they are, CR-terminated.
                let mut bytes = echo.to_bytes();
                for segment in request.segments().skip(1) {
                    bytes.extend_from_slice(segment.as_bytes());
                    bytes.push(b'\r');
                }
                return Some(bytes);
            }
            let copy = MessageBuilder::from_message(request);
            for segment in copy.segments().iter().skip(1) {
                echo.push(segment.clone());
            }
            return Some(echo.to_bytes());
        }
        let reply = match Transaction::of(request) {
            None => Reply::new(
                AckCode::Reject,
                vec![app_error(NOT_SUPPORTED_CODE, NOT_SUPPORTED_TEXT)],
            ),
            Some(transaction) => {
                let mut reply = self.process(transaction, request, timestamp);
                reply.echo_type = transaction.echoes_message_type();
                reply
            }
        };
        Some(reply.write(request, timestamp, control_id))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while the lock is held; were it poisoned, the registry is still
        // consistent, since every change is a single insert.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn process(&self, transaction: Transaction, request: &Message<'_>, timestamp: &str) -> Reply {
        let phns = phns(request);
        if phns.iter().any(|phn| phn_error(phn).is_some()) {
            return Reply::error(CHECK_DIGIT_CODE, CHECK_DIGIT_TEXT);
        }
        let phn = phns
            .first()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        match (transaction, phn) {
            (Transaction::RecordNewPerson, _) => self.record_new_person(request, timestamp),
            (_, None) => Reply::missing(&[MISSING_PHN]),
            (Transaction::GetPerson, Some(phn)) => self.get_person(&phn),
            (_, Some(_)) => Reply::success(1),
        }
    }

    fn record_new_person(&self, request: &Message<'_>, timestamp: &str) -> Reply {
        let Some(person) = read_person(request) else {
            // Only reached with something missing: say what.
            let mut missing = Vec::new();
            let (surname, _) = name(request);
            if surname.is_empty() {
                missing.push(MISSING_SURNAME);
            }
            if birth_date(request).is_none() {
                missing.push(MISSING_BIRTH_DATE);
            }
            return Reply::missing(&missing);
        };
        let identity = Identity {
            surname: fold_case(&person.surname),
            given: fold_case(&person.given),
            birth_date: person.birth_date.clone(),
        };

        let phn = {
            let mut state = self.state();
            if state.identities.contains_key(&identity) {
                return Reply::error(DUPLICATE_CODE, DUPLICATE_TEXT);
            }
            let Some(phn) = state.allocate_phn() else {
                return Reply::new(
                    AckCode::Reject,
                    vec![app_error(PHNS_EXHAUSTED_CODE, PHNS_EXHAUSTED_TEXT)],
                );
            };
            state.identities.insert(identity, phn.clone());
            state.persons.insert(phn.clone(), person.clone());
            phn
        };

        let mut zia = SegmentBuilder::new("ZIA");
        for (c, component) in (1..=24).zip(&person.address) {
            for (s, leaf) in (1..).zip(component) {
                zia.set_at(5, 1, c, s, leaf.clone());
            }
        }
        zia.set_at(5, 1, 29, 1, "Y")
            .set_at(5, 1, 30, 1, today(timestamp))
            .set_at(5, 1, 35, 1, "N");

        let mut reply = Reply::success(3);
        reply.segments = vec![pid_with_phn(&phn), zia];
        reply
    }

    fn get_person(&self, phn: &str) -> Reply {
        let Some(person) = self.state().persons.get(phn).cloned() else {
            return Reply::error(NOT_FOUND_CODE, NOT_FOUND_TEXT);
        };
        let mut pid = pid_with_phn(phn);
        pid.set_at(5, 1, 1, 1, person.surname.clone())
            .set_at(5, 1, 2, 1, person.given.clone())
            .set(7, person.birth_date.as_str())
            .set(8, person.sex.clone());
        let mut zia = SegmentBuilder::new("ZIA");
        zia.set_at(5, 1, 1, 1, person.surname)
            .set_at(5, 1, 2, 1, person.given);
        for (c, component) in (1..).zip(person.address) {
            for (s, leaf) in (1..).zip(component) {
                zia.set_at(6, 1, c, s, leaf);
            }
        }
        let mut reply = Reply::success(1);
        reply.segments = vec![pid, zia];
        reply
    }
}

/// `PID||<phn>^^^BC^PH^MOH`
fn pid_with_phn(phn: &str) -> SegmentBuilder {
    let mut pid = SegmentBuilder::new("PID");
    pid.set_at(2, 1, 1, 1, phn)
        .set_at(2, 1, 4, 1, "BC")
        .set_at(2, 1, 5, 1, "PH")
        .set_at(2, 1, 6, 1, "MOH");
    pid
}

/// The PHNs in the first PID's PID-2: CX-1 of every repetition whose assigning authority
/// (CX-4) is `BC` and identifier type (CX-5) is `PH`, when CX-1 is not empty.
fn phns(request: &Message<'_>) -> Vec<Vec<u8>> {
    let field = Path::new(*b"PID", 2);
    let Some(raw) = request.raw(&field) else {
        return Vec::new();
    };
    let repetitions = raw
        .iter()
        .filter(|&&b| b == request.delimiters().repetition)
        .count() as u32
        + 1;
    (1..=repetitions)
        .filter_map(|r| {
            let at = |c| {
                request.value(
                    &field
                        .with_repetition(r)
                        .with_component(c)
                        .with_subcomponent(1),
                )
            };
            let authority = at(4);
            let kind = at(5);
            if authority.data() != Some(b"BC") || kind.data() != Some(b"PH") {
                return None;
            }
            at(1).data().map(<[u8]>::to_vec)
        })
        .collect()
}

/// The value at `path`, first subcomponent, decoded; empty when not present or null.
fn text_at(request: &Message<'_>, path: Path) -> Vec<u8> {
    let path = if path.component().is_some() {
        path.with_subcomponent(1)
    } else {
        path
    };
    request
        .value(&path)
        .data()
        .map_or_else(Vec::new, <[u8]>::to_vec)
}

fn is_date(value: &[u8]) -> bool {
    value.len() == 8 && value.iter().all(u8::is_ascii_digit)
}

/// PID-5 as Volume 5's example uses it: a birth date (`PID|||||19730515|M`).
fn pid5_is_birth_date(request: &Message<'_>) -> bool {
    is_date(&text_at(request, Path::new(*b"PID", 5).with_component(1)))
}

/// Surname and given name, from ZIA-5 or else PID-5 (see the module docs).
fn name(request: &Message<'_>) -> (Vec<u8>, Vec<u8>) {
    let zia = Path::new(*b"ZIA", 5);
    let source = if request.value(&zia).data().is_some() {
        Some(zia)
    } else if !pid5_is_birth_date(request) {
        Some(Path::new(*b"PID", 5))
    } else {
        None
    };
    source.map_or_else(Default::default, |field| {
        (
            text_at(request, field.with_repetition(1).with_component(1)),
            text_at(request, field.with_repetition(1).with_component(2)),
        )
    })
}

/// `YYYYMMDD` from PID-7, or else from PID-5 (see the module docs).
fn birth_date(request: &Message<'_>) -> Option<String> {
    let pid7 = text_at(request, Path::new(*b"PID", 7).with_component(1));
    if pid7.len() >= 8 && is_date(&pid7[..8]) {
        return Some(String::from_utf8_lossy(&pid7[..8]).into_owned());
    }
    if pid7.is_empty() && pid5_is_birth_date(request) {
        let pid5 = text_at(request, Path::new(*b"PID", 5).with_component(1));
        return Some(String::from_utf8_lossy(&pid5).into_owned());
    }
    None
}

/// PID-8, or else PID-6 when the birth date is at PID-5.
fn sex(request: &Message<'_>) -> Vec<u8> {
    let pid8 = text_at(request, Path::new(*b"PID", 8).with_component(1));
    if pid8.is_empty() && pid5_is_birth_date(request) {
        return text_at(request, Path::new(*b"PID", 6).with_component(1));
    }
    pid8
}

/// The first repetition of ZIA-6, every component and subcomponent decoded.
fn address(request: &Message<'_>) -> Address {
    let d: &Delimiters = request.delimiters();
    let Some(raw) = request.raw(&Path::new(*b"ZIA", 6).with_repetition(1)) else {
        return Vec::new();
    };
    raw.split(|&b| b == d.component)
        .map(|component| {
            let leaf = |sub: &[u8]| match sub {
                b"" => Leaf::Empty,
                b"\"\"" => Leaf::Null,
                _ => Leaf::Text(escape::decode(sub, d).into_owned()),
            };
            match d.subcomponent {
                Some(s) => component.split(|&b| b == s).map(leaf).collect(),
                None => vec![leaf(component)],
            }
        })
        .collect()
}

/// The person an R02 describes, or `None` when the surname or birth date is missing.
fn read_person(request: &Message<'_>) -> Option<Person> {
    let (surname, given) = name(request);
    let birth_date = birth_date(request);
    if surname.is_empty() {
        return None;
    }
    Some(Person {
        surname,
        given,
        birth_date: birth_date?,
        sex: sex(request),
        address: address(request),
    })
}

/// `value` without surrounding white space, upper-cased (Unicode when it is UTF-8,
/// ASCII letters only otherwise), for comparing names without regard to case.
fn fold_case(value: &[u8]) -> Vec<u8> {
    let value = value.trim_ascii();
    match std::str::from_utf8(value) {
        Ok(s) => s.to_uppercase().into_bytes(),
        Err(_) => value.to_ascii_uppercase(),
    }
}

/// `YYYYMMDD`: the date `timestamp` starts with, or today's (Pacific).
fn today(timestamp: &str) -> String {
    match timestamp.get(..8) {
        Some(date) if is_date(date.as_bytes()) => date.to_owned(),
        _ => now_pacific().chars().take(8).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hl7::{Severity, check};

    const R02_EXAMPLE: &[u8] = include_bytes!("../../tests/data/v5_2_5_3_request.hl7");
    const R35_EXAMPLE: &[u8] = include_bytes!("../../tests/data/v5_2_5_4_request.hl7");
    const R46_EXAMPLE: &[u8] = include_bytes!("../../tests/data/v5_2_5_5_request.hl7");
    const R75_EXAMPLE: &[u8] = include_bytes!("../../tests/data/v5_2_5_6_request.hl7");

    const TIMESTAMP: &str = "20030717140908";
    const CONTROL_ID: &str = "1232420";

    /// Answers `request` at [`TIMESTAMP`] and checks that the answer parses and has no
    /// `hl7::check` errors.
    fn ask(sim: &Simulator, request: &[u8]) -> Vec<u8> {
        let request = Message::parse(request).expect("the request parses");
        let answer = sim
            .answer_at(&request, TIMESTAMP, CONTROL_ID)
            .expect("the simulator answers");
        let parsed = Message::parse(&answer).expect("the answer parses");
        let errors: Vec<_> = check(&parsed)
            .into_iter()
            .filter(|f| f.severity == Severity::Error)
            .collect();
        assert!(errors.is_empty(), "{errors:?} in {answer:?}");
        answer
    }

    fn text(answer: &[u8], path: &str) -> String {
        let msg = Message::parse(answer).unwrap();
        msg.value(&path.parse().unwrap()).text().into_owned()
    }

    fn count(answer: &[u8], id: &[u8]) -> usize {
        let msg = Message::parse(answer).unwrap();
        msg.segments().filter(|s| s.id() == id).count()
    }

    /// The request's MSH-3/4 and MSH-5/6 swapped, MSA-2 its MSH-10, MSH-7/10 ours.
    fn assert_addressed(answer: &[u8], request: &[u8]) {
        let req = |p: &str| text(request, p);
        assert_eq!(text(answer, "MSH-3"), req("MSH-5"));
        assert_eq!(text(answer, "MSH-4"), req("MSH-6"));
        assert_eq!(text(answer, "MSH-5"), req("MSH-3"));
        assert_eq!(text(answer, "MSH-6"), req("MSH-4"));
        assert_eq!(text(answer, "MSH-7"), TIMESTAMP);
        assert_eq!(text(answer, "MSH-8"), req("MSH-8"));
        assert_eq!(text(answer, "MSH-10"), CONTROL_ID);
        assert_eq!(text(answer, "MSH-11"), req("MSH-11"));
        assert_eq!(text(answer, "MSH-12"), req("MSH-12"));
        assert_eq!(text(answer, "MSA-2"), req("MSH-10"));
    }

    /// MSA-1 `ack`, then one ERR per code, the first repeated in MSA-3.
    fn assert_msa(answer: &[u8], ack: &str, codes: &[(&str, &str)]) {
        assert_eq!(
            text(answer, "MSA-1"),
            ack,
            "{}",
            String::from_utf8_lossy(answer)
        );
        let (code, message) = codes[0];
        assert_eq!(text(answer, "MSA-3"), format!("{code}{message}"));
        assert_eq!(count(answer, b"ERR"), codes.len());
        for (n, (code, message)) in (1..).zip(codes) {
            assert_eq!(text(answer, &format!("ERR[{n}]-1.4.1")), *code);
            assert_eq!(text(answer, &format!("ERR[{n}]-1.4.2")), *message);
            assert_eq!(text(answer, &format!("ERR[{n}]-1.1")), "");
        }
    }

    const SUCCESS: (&str, &str) = (SUCCESS_CODE, SUCCESS_TEXT);

    fn r02(name: &str, birth_date: &str) -> Vec<u8> {
        format!(
            "MSH|^~\\&|ADT1|NF20|RAIRCRD-NW-PRSN|BC0003000|19990531144853|TRAIN96|R02|19980915000020|D|2.3\r\
             PID|||||{birth_date}|F\r\
             ZIA|||||{name}|12 MAIN ST^^^^^^^^^^^^^^^^^^^^VICTORIA^BC^V8V1S9^CAN^H\r"
        )
        .into_bytes()
    }

    fn r03(phn: &str) -> Vec<u8> {
        format!(
            "MSH|^~\\&|ADT1|NF20|RAIGT-PRSN-DMGR|BC0003000|19990531144853|TRAIN96|R03|19980915000021|D|2.3\r\
             PID||{phn}^^^BC^PH\r"
        )
        .into_bytes()
    }

    fn new_phn(sim: &Simulator, request: &[u8]) -> String {
        let answer = ask(sim, request);
        assert_msa(&answer, "AA", &[SUCCESS, SUCCESS, SUCCESS]);
        let phn = text(&answer, "PID-2.1");
        assert_eq!(phn_error(phn.as_bytes()), None, "{phn}");
        phn
    }

    #[test]
    fn volume_5_r02_records_a_new_person() {
        let sim = Simulator::new();
        let answer = ask(&sim, R02_EXAMPLE);
        assert_addressed(&answer, R02_EXAMPLE);
        assert_eq!(text(&answer, "MSH-3"), "RAIRCRD-NW-PRSN");
        assert_eq!(text(&answer, "MSH-5"), "ADT1");
        assert_eq!(text(&answer, "MSH-9"), "R02");
        assert_msa(&answer, "AA", &[SUCCESS, SUCCESS, SUCCESS]);
        assert_eq!(text(&answer, "MSA-3"), "HJMB001ISUCCESSFULLY COMPLETED");

        let phn = text(&answer, "PID-2.1");
        assert_eq!(phn, "9900000004");
        assert_eq!(phn_error(phn.as_bytes()), None);
        assert_eq!(text(&answer, "PID-2"), format!("{phn}^^^BC^PH^MOH"));
        assert_eq!(
            text(&answer, "ZIA-5"),
            "1210-647 MICHIGAN ST^^^^^^^^^^^^^^^^^^^^VICTORIA^BC^V8V1S9^CAN^^^^^Y^20030717^^^^^N"
        );
        // Exactly as written in 2.5.3, but for MSH-7/10 and the PHN.
        let expected = format!(
            "MSH|^~\\&|RAIRCRD-NW-PRSN|BC0003000|ADT1|NF20|20030717140908|Train96|R02|1232420|D|2.3\r\
             MSA|AA|19980915000020|HJMB001ISUCCESSFULLY COMPLETED\r\
             ERR|^^^HJMB001I&SUCCESSFULLY COMPLETED\r\
             ERR|^^^HJMB001I&SUCCESSFULLY COMPLETED\r\
             ERR|^^^HJMB001I&SUCCESSFULLY COMPLETED\r\
             PID||{phn}^^^BC^PH^MOH\r\
             ZIA|||||1210-647 MICHIGAN ST^^^^^^^^^^^^^^^^^^^^VICTORIA^BC^V8V1S9^CAN^^^^^Y^20030717^^^^^N\r"
        );
        assert_eq!(String::from_utf8(answer).unwrap(), expected);
        assert_eq!(sim.person_count(), 1);
    }

    #[test]
    fn volume_5_r35_r46_r75_are_confirmed() {
        let sim = Simulator::new();
        for (request, application, message_type) in [
            (R35_EXAMPLE, "RAIEND-PYR-RL", "R35"),
            (R46_EXAMPLE, "RAICOVPART-ENQ", "R46^Z26"),
            (R75_EXAMPLE, "PHCPEND-OVRD", "ACK^Z62"),
        ] {
            let answer = ask(&sim, request);
            assert_addressed(&answer, request);
            assert_eq!(text(&answer, "MSH-3"), application);
            assert_eq!(text(&answer, "MSH-9"), message_type);
            assert_msa(&answer, "AA", &[SUCCESS]);
            assert_eq!(text(&answer, "MSA-3"), "HJMB001ISUCCESSFULLY COMPLETED");
            assert_eq!(count(&answer, b"PID"), 0);
            assert_eq!(Message::parse(&answer).unwrap().segment_count(), 3);
        }
        let answer = ask(&sim, R46_EXAMPLE);
        assert_eq!(text(&answer, "MSH-4"), "BC0003000");
        assert_eq!(text(&answer, "MSH-6"), "BC00000098");
        assert_eq!(text(&answer, "MSA-2"), "19980915000020");
        let answer = ask(&sim, R75_EXAMPLE);
        assert_eq!(text(&answer, "MSH-6"), "BC01000106");
        assert_eq!(text(&answer, "MSA-2"), "20020801105005");
        assert_eq!(sim.person_count(), 0);
    }

    #[test]
    fn the_same_person_twice_is_a_duplicate() {
        let sim = Simulator::new();
        new_phn(&sim, &r02("SMITH^JANE", "19800101"));
        let answer = ask(&sim, &r02("smith^Jane", "19800101"));
        assert_addressed(&answer, &r02("SMITH^JANE", "19800101"));
        assert_eq!(text(&answer, "MSH-9"), "R02");
        assert_msa(&answer, "AE", &[(DUPLICATE_CODE, DUPLICATE_TEXT)]);
        assert_eq!(
            text(&answer, "MSA-3"),
            "HNHR517EDUPLICATE CLIENT FOUND ON DATABASE - CLIENT NOT ADDED"
        );
        assert_eq!(count(&answer, b"PID"), 0);
        assert_eq!(count(&answer, b"ZIA"), 0);
        assert_eq!(sim.person_count(), 1);
        // Another given name or birth date is another person.
        new_phn(&sim, &r02("SMITH^JOHN", "19800101"));
        new_phn(&sim, &r02("SMITH^JANE", "19800102"));
        assert_eq!(sim.person_count(), 3);
    }

    #[test]
    fn a_recorded_person_can_be_fetched_by_phn() {
        let sim = Simulator::new();
        let phn = new_phn(&sim, R02_EXAMPLE);
        let request = r03(&phn);
        let answer = ask(&sim, &request);
        assert_addressed(&answer, &request);
        assert_eq!(text(&answer, "MSH-3"), "RAIGT-PRSN-DMGR");
        assert_eq!(text(&answer, "MSH-9"), "R03");
        assert_msa(&answer, "AA", &[SUCCESS]);
        assert_eq!(text(&answer, "PID-2"), format!("{phn}^^^BC^PH^MOH"));
        assert_eq!(text(&answer, "PID-5"), "DONOGHUE^JAMES");
        assert_eq!(text(&answer, "PID-7"), "19730515");
        assert_eq!(text(&answer, "PID-8"), "M");
        assert_eq!(text(&answer, "ZIA-5"), "DONOGHUE^JAMES");
        assert_eq!(
            text(&answer, "ZIA-6"),
            "1210-647 MICHIGAN ST^^^^^^^^^^^^^^^^^^^^VICTORIA^BC^V8V1S9^CAN^H"
        );
        assert_eq!(
            String::from_utf8(answer)
                .unwrap()
                .split('\r')
                .nth(3)
                .unwrap(),
            format!("PID||{phn}^^^BC^PH^MOH|||DONOGHUE^JAMES||19730515|M")
        );
    }

    #[test]
    fn standard_hl7_person_fields_and_other_delimiters() {
        let sim = Simulator::new();
        // Name at PID-5, birth date (a time stamp) at PID-7, sex at PID-8; an escaped
        // component separator in the address; delimiters other than `|^~\&`.
        let request = b"MSH!@#$%!ADT1!NF20!RAIRCRD-NW-PRSN!BC0003000!19990531144853!!R02!1!D!2.3\r\
            PID!!!!!O'BRIEN@MARY!MAIDEN!196002291230!F\r\
            ZIA!!!!!!UNIT 5^6$T$7@@TOWN%LINE\r";
        let phn = new_phn(&sim, request);
        let answer = ask(&sim, &r03(&phn));
        assert_eq!(text(&answer, "PID-5"), "O'BRIEN^MARY");
        assert_eq!(text(&answer, "PID-7"), "19600229");
        assert_eq!(text(&answer, "PID-8"), "F");
        assert_eq!(text(&answer, "ZIA-6.1"), "UNIT 5^6%7");
        assert_eq!(text(&answer, "ZIA-6.2"), "");
        assert_eq!(text(&answer, "ZIA-6.3.1"), "TOWN");
        assert_eq!(text(&answer, "ZIA-6.3.2"), "LINE");
        // PID-6 is not read as the sex when the birth date is at PID-7.
        let request = b"MSH|^~\\&|ADT1|NF20|RAIRCRD-NW-PRSN|BC0003000|1||R02|2|D|2.3\r\
            PID|||||ROE^RICHARD|X|19700101\r";
        let phn = new_phn(&sim, request);
        let answer = ask(&sim, &r03(&phn));
        assert_eq!(text(&answer, "PID-5"), "ROE^RICHARD");
        assert_eq!(text(&answer, "PID-8"), "");
        assert_eq!(count(&answer, b"ZIA"), 1);
        assert_eq!(text(&answer, "ZIA-6"), "");
    }

    #[test]
    fn an_unknown_phn_is_not_found() {
        let sim = Simulator::new();
        let request = r03("9865821574");
        let answer = ask(&sim, &request);
        assert_addressed(&answer, &request);
        assert_eq!(text(&answer, "MSH-9"), "R03");
        assert_msa(&answer, "AE", &[(NOT_FOUND_CODE, NOT_FOUND_TEXT)]);
        assert_eq!(
            text(&answer, "MSA-3"),
            "HNHR510ECLIENT NOT FOUND ON DATABASE"
        );
        assert_eq!(count(&answer, b"PID"), 0);
    }

    #[test]
    fn a_bad_check_digit_is_refused() {
        let sim = Simulator::new();
        let phn = new_phn(&sim, R02_EXAMPLE);
        // The recorded PHN with its last digit changed.
        let last = phn.as_bytes()[9] - b'0';
        let bad = format!("{}{}", &phn[..9], (last + 1) % 10);
        let not_nine = format!("8{}", &phn[1..]);
        let check_digit = [(CHECK_DIGIT_CODE, CHECK_DIGIT_TEXT)];
        for request in [
            r03(&bad),
            r03(&not_nine),
            r03("12345"),
            String::from_utf8(R35_EXAMPLE.to_vec())
                .unwrap()
                .replace("9029274643", "9029274644")
                .into_bytes(),
            String::from_utf8(R46_EXAMPLE.to_vec())
                .unwrap()
                .replace("9076873472", "9076873473")
                .into_bytes(),
            String::from_utf8(R75_EXAMPLE.to_vec())
                .unwrap()
                .replace("9013069354", "9013069354^^^BC^PH~9013069355")
                .into_bytes(),
            String::from_utf8(R02_EXAMPLE.to_vec())
                .unwrap()
                .replace("PID|||||", "PID||9865821575^^^BC^PH|||")
                .into_bytes(),
        ] {
            let answer = ask(&sim, &request);
            assert_msa(&answer, "AE", &check_digit);
            assert_eq!(
                text(&answer, "MSA-3"),
                "HNHR520EPHN FAILS CHECK DIGIT VALIDATION"
            );
        }
        let answer = ask(
            &sim,
            &String::from_utf8(R75_EXAMPLE.to_vec())
                .unwrap()
                .replace("9013069354", "9013069355")
                .into_bytes(),
        );
        assert_eq!(text(&answer, "MSH-9"), "ACK^Z62");
        assert_msa(&answer, "AE", &check_digit);
        // The R02 with the bad PHN recorded no one.
        assert_eq!(sim.person_count(), 1);
        // An identifier of another authority is not a PHN.
        let alberta = String::from_utf8(r03(&phn))
            .unwrap()
            .replace("^^^BC^PH", "^^^AB^PH");
        let answer = ask(&sim, alberta.as_bytes());
        assert_msa(
            &answer,
            "AE",
            &[(MISSING_FIELD_CODE, "REQUIRED FIELD MISSING: PID-2")],
        );
    }

    #[test]
    fn missing_fields_are_named() {
        let sim = Simulator::new();
        let missing = |what: &str| (MISSING_FIELD_CODE, format!("{MISSING_FIELD_TEXT}: {what}"));
        let (code, pid2) = missing("PID-2");
        for (request, message_type) in [
            (R35_EXAMPLE, "R35"),
            (R46_EXAMPLE, "R46^Z26"),
            (R75_EXAMPLE, "ACK^Z62"),
        ] {
            let without_phn: Vec<u8> = String::from_utf8(request.to_vec())
                .unwrap()
                .split('\r')
                .filter(|s| !s.starts_with("PID"))
                .collect::<Vec<_>>()
                .join("\r")
                .into_bytes();
            let answer = ask(&sim, &without_phn);
            assert_eq!(text(&answer, "MSH-9"), message_type);
            assert_msa(&answer, "AE", &[(code, &pid2)]);
        }
        let answer = ask(&sim, &r03(""));
        assert_msa(&answer, "AE", &[(code, &pid2)]);
        assert_eq!(
            text(&answer, "MSA-3"),
            "HNHR521EREQUIRED FIELD MISSING: PID-2"
        );

        let (_, surname) = missing("SURNAME");
        let (_, birth) = missing("BIRTH DATE");
        let answer = ask(&sim, &r02("^JAMES", "19730515"));
        assert_eq!(text(&answer, "MSH-9"), "R02");
        assert_msa(&answer, "AE", &[(code, &surname)]);
        let answer = ask(&sim, &r02("DONOGHUE^JAMES", ""));
        assert_msa(&answer, "AE", &[(code, &birth)]);
        let answer = ask(&sim, &r02("DONOGHUE^JAMES", "1973051"));
        assert_msa(&answer, "AE", &[(code, &birth)]);
        let answer = ask(&sim, &r02("", ""));
        assert_msa(&answer, "AE", &[(code, &surname), (code, &birth)]);
        let answer = ask(&sim, &r02("\"\"^JAMES", "19730515"));
        assert_msa(&answer, "AE", &[(code, &surname)]);
        assert_eq!(sim.person_count(), 0);
        // A given name is not required.
        new_phn(&sim, &r02("CHER", "19460520"));
    }

    #[test]
    fn unknown_transactions_are_rejected() {
        let sim = Simulator::new();
        let not_supported = [(NOT_SUPPORTED_CODE, NOT_SUPPORTED_TEXT)];
        let requests = [
            // Another application.
            b"MSH|^~\\&|ADT00001|BC00000098|LTS00001|BC0003000|19980915231202|JSMITH|ZLI^L01|19980915000001|P|2.3\r".to_vec(),
            // A supported application with a type it does not handle.
            String::from_utf8(r03("9865821574")).unwrap().replace("|R03|", "|R02|").into_bytes(),
            String::from_utf8(R02_EXAMPLE.to_vec()).unwrap().replace("|R02|", "|R03|").into_bytes(),
            // Case matters.
            String::from_utf8(R35_EXAMPLE.to_vec()).unwrap().replace("RAIEND-PYR-RL", "raiend-pyr-rl").into_bytes(),
            // No message type at all.
            b"MSH|^~\\&|A|F|RAIEND-PYR-RL|BC0003000|1||||P|2.3\rPID||9029274643^^^BC^PH\r".to_vec(),
        ];
        for request in requests {
            let answer = Message::parse(&request)
                .ok()
                .and_then(|r| sim.answer_at(&r, TIMESTAMP, CONTROL_ID))
                .unwrap();
            assert_msa(&answer, "AR", &not_supported);
            assert_eq!(
                text(&answer, "MSA-3"),
                "HNSM999ETRANSACTION NOT SUPPORTED BY THE SIMULATOR"
            );
            assert_eq!(text(&answer, "MSH-9.1"), "ACK");
            assert_eq!(text(&answer, "MSH-5"), text(&request, "MSH-3"));
            assert_eq!(text(&answer, "MSA-2"), text(&request, "MSH-10"));
        }
        let answer = ask(&sim, b"MSH|^~\\&|ADT00001|BC00000098|LTS00001|BC0003000|19980915231202|JSMITH|ZLI^L01|19980915000001|P|2.3\r");
        assert_eq!(text(&answer, "MSH-9"), "ACK^L01");
        assert_eq!(text(&answer, "MSH-3"), "LTS00001");
    }

    #[test]
    fn echo_application_answers_with_the_request() {
        let sim = Simulator::new();
        let raw = b"MSH|^~\\&|ADT1|NF20|HNSIM-ECHO|BC0003000|1|X|R01^Z01|77|D|2.3\rPID||9029274643^^^BC^PH\rNTE|||Some \\T\\ text\r";
        let request = Message::parse(raw).unwrap();
        let answer = sim
            .answer_at(&request, "20261123100000-0700", "88")
            .unwrap();
        let text = String::from_utf8(answer.clone()).unwrap();
        assert_eq!(
            text,
            "MSH|^~\\&|HNSIM-ECHO|BC0003000|ADT1|NF20|20261123100000-0700|X|ACK^Z01|88|D|2.3\r\
             MSA|AA|77|HJMB001ISUCCESSFULLY COMPLETED\rERR|^^^HJMB001I&SUCCESSFULLY COMPLETED\r\
             PID||9029274643^^^BC^PH\rNTE|||Some \\T\\ text\r"
        );
        assert_eq!(sim.person_count(), 0);

        // A request that declared no escape or subcomponent character: `&` is data there,
        // and the answer (which declares `\&`) escapes it.
        let raw = b"MSH|^~|ADT1|NF20|HNSIM-ECHO|BC0003000|1|X|R01|77|D|2.3\rNTE|||A&B\r";
        let answer = sim
            .answer_at(&Message::parse(raw).unwrap(), "T", "88")
            .unwrap();
        assert!(
            answer.ends_with(b"NTE|||A\\T\\B\r"),
            "{:?}",
            String::from_utf8_lossy(&answer)
        );
    }

    #[test]
    fn no_response_application_never_answers() {
        let sim = Simulator::new();
        for message_type in ["R02", "R03", "ZLI^L01", ""] {
            let request = format!(
                "MSH|^~\\&|ADT1|NF20|HNSIM-NORESPONSE|BC0003000|1||{message_type}|2|D|2.3\rPID||9865821574^^^BC^PH\r"
            );
            let request = Message::parse(request.as_bytes()).unwrap();
            assert_eq!(sim.answer(&request), None);
            assert_eq!(sim.answer_at(&request, TIMESTAMP, CONTROL_ID), None);
        }
        assert_eq!(sim.person_count(), 0);
    }

    #[test]
    fn answer_uses_the_current_time_and_new_ids() {
        let sim = Simulator::new();
        let request = Message::parse(R02_EXAMPLE).unwrap();
        let first = sim.answer(&request).unwrap();
        let second = sim.answer(&Message::parse(R35_EXAMPLE).unwrap()).unwrap();
        let now = text(&first, "MSH-7");
        assert_eq!(now.len(), 19, "{now}");
        assert!(now.ends_with("-0700") || now.ends_with("-0800"), "{now}");
        assert_eq!(text(&first, "ZIA-5.30"), now[..8]);
        assert_eq!(text(&first, "MSH-10").len(), 20);
        assert_ne!(text(&first, "MSH-10"), text(&second, "MSH-10"));
        assert_eq!(text(&second, "MSA-1"), "AA");
        // Given a time stamp that is not a date, ZIA-5.30 is still today's date.
        let before = now_pacific()[..8].to_owned();
        let answer = sim
            .answer_at(&Message::parse(&r02("X^Y", "20000101")).unwrap(), "T", "1")
            .unwrap();
        let after = now_pacific()[..8].to_owned();
        let date = text(&answer, "ZIA-5.30");
        assert!(date == before || date == after, "{date}");
    }

    #[test]
    fn phns_count_up_with_valid_check_digits() {
        let mut state = State::default();
        let phns: Vec<String> = (0..12).map(|_| state.allocate_phn().unwrap()).collect();
        assert_eq!(phns[0], "9900000004");
        assert_eq!(phns[1], "9900000011");
        assert_eq!(phns[2], "9900000029");
        for pair in phns.windows(2) {
            assert!(pair[0] < pair[1], "{pair:?}");
        }
        for phn in &phns {
            assert_eq!(phn_error(phn.as_bytes()), None, "{phn}");
            assert!(phn.starts_with("99"));
        }
        // Every number in between with a valid check digit was given, in order; the
        // others (90000005, 90000009, 90000013) were skipped, not given a wrong digit.
        let expected: Vec<String> = (FIRST_PHN_BODY..FIRST_PHN_BODY + state.next)
            .filter_map(|body| {
                let digits = format!("{body:08}");
                phn_check_digit(digits.as_bytes()).map(|c| format!("9{digits}{c}"))
            })
            .collect();
        assert_eq!(phns, expected);
        assert_eq!(state.next, 15);
    }

    #[test]
    fn the_end_of_the_phn_range_is_a_clear_reject() {
        let sim = Simulator::new();
        sim.state().next = LAST_PHN_BODY - FIRST_PHN_BODY - 20;
        let mut issued = 0;
        let answer = loop {
            let answer = ask(&sim, &r02(&format!("LAST^P{issued}"), "19990101"));
            if text(&answer, "MSA-1") != "AA" {
                break answer;
            }
            let phn = text(&answer, "PID-2.1");
            assert!(phn.starts_with("9999999"), "{phn}");
            assert_eq!(phn_error(phn.as_bytes()), None);
            issued += 1;
        };
        assert!((15..=21).contains(&issued), "{issued}");
        assert_eq!(text(&answer, "MSH-9"), "R02");
        assert_msa(&answer, "AR", &[(PHNS_EXHAUSTED_CODE, PHNS_EXHAUSTED_TEXT)]);
        assert_eq!(sim.person_count(), issued);
    }

    #[test]
    fn a_thousand_persons_get_a_thousand_phns() {
        let sim = Simulator::new();
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000 {
            let phn = new_phn(&sim, &r02(&format!("PERSON^NUMBER{i}"), "19500101"));
            assert!(seen.insert(phn));
        }
        assert_eq!(sim.person_count(), 1000);
        // Each can be fetched again.
        for phn in seen.iter().take(20) {
            let answer = ask(&sim, &r03(phn));
            assert_eq!(text(&answer, "MSA-1"), "AA");
            assert_eq!(&text(&answer, "PID-2.1"), phn);
        }
    }

    #[test]
    fn threads_registering_at_once_get_distinct_phns() {
        let sim = Simulator::new();
        let phns: Vec<String> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..8)
                .map(|t| {
                    let sim = &sim;
                    s.spawn(move || {
                        (0..50)
                            .map(|i| {
                                new_phn(sim, &r02(&format!("THREAD{t}^PERSON{i}"), "19900101"))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        let distinct: std::collections::HashSet<_> = phns.iter().collect();
        assert_eq!(phns.len(), 400);
        assert_eq!(distinct.len(), 400);
        assert_eq!(sim.person_count(), 400);
        // And the same person from every thread at once is recorded exactly once.
        let outcomes: Vec<String> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..8)
                .map(|_| {
                    let sim = &sim;
                    s.spawn(move || text(&ask(sim, &r02("SAME^PERSON", "19900101")), "MSA-1"))
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        assert_eq!(outcomes.iter().filter(|o| *o == "AA").count(), 1);
        assert_eq!(outcomes.iter().filter(|o| *o == "AE").count(), 7);
    }

    #[test]
    fn every_code_and_text_is_valid() {
        for (code, text) in [
            (SUCCESS_CODE, SUCCESS_TEXT),
            (NOT_FOUND_CODE, NOT_FOUND_TEXT),
            (DUPLICATE_CODE, DUPLICATE_TEXT),
            (CHECK_DIGIT_CODE, CHECK_DIGIT_TEXT),
            (PHNS_EXHAUSTED_CODE, PHNS_EXHAUSTED_TEXT),
            (NOT_SUPPORTED_CODE, NOT_SUPPORTED_TEXT),
        ] {
            assert!(AppError::new(code, text).is_ok(), "{code}");
        }
        for field in [MISSING_PHN, MISSING_SURNAME, MISSING_BIRTH_DATE] {
            let text = format!("{MISSING_FIELD_TEXT}: {field}");
            assert!(AppError::new(MISSING_FIELD_CODE, &text).is_ok(), "{text}");
        }
        assert_eq!(
            format!("{:?}", Simulator::new()),
            "Simulator { persons: 0, .. }"
        );
    }
}
