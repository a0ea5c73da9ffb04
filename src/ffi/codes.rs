//! The return codes of the C ABI. Values are fixed forever: a code is never renumbered,
//! and a retired one stays here as a comment.

/// What an hnapi call returns. `HNET_RTRN_SUCCESS` is 0; every other code is non-zero.
///
/// The first six names are those existing HNClient software knows. The rule of Volume 5
/// (2.1.2) decides between success and failure: when an HL7 answer exists — the
/// receiver's, or an AR ACK the library built for a timeout or a lost connection — the
/// call succeeds with that answer; a non-zero code means no valid HL7 answer could be
/// formed.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum HnetRtrn {
    /// The call did what it says; any answer is in the caller's buffer.
    HNET_RTRN_SUCCESS = 0,
    /// A parameter is NULL, empty, out of range or not UTF-8 where text is expected.
    HNET_RTRN_INVALIDPARAMETER = 1,
    /// The message has no usable MSH segment, so no answer can name it.
    HNET_RTRN_INVALIDFORMATERROR = 2,
    /// Kept for HNClient software; not returned: a timeout is answered with an AR ACK
    /// (`TXFR024E`) and `HNET_RTRN_SUCCESS` (Volume 5, 2.1.2).
    HNET_RTRN_REMOTETIMEOUT = 3,
    /// The configuration's facility is not the credential's.
    HNET_RTRN_DOMAINMISMATCH = 4,
    /// The gateway refused the envelope (replay, time window, MAC), or an answer's
    /// envelope did not open.
    HNET_RTRN_ENCRYPTIONERROR = 5,
    /// The buffer is too small: `*len` holds the size needed, and the answer (or
    /// request) is kept for the next call.
    HNET_RTRN_BUFFERTOOSMALL = 6,
    /// Not there yet: the answer (or, for a server, a request) has not arrived within
    /// the wait; a ticket stays valid.
    HNET_RTRN_PENDING = 7,
    /// The configuration or the credential cannot be used (the last error says which key
    /// of which file).
    HNET_RTRN_CONFIGERROR = 8,
    /// A server application's answer cannot be delivered: the connection its request
    /// came on is gone.
    HNET_RTRN_CONNECTIONERROR = 9,
    /// The ticket is unknown, or its answer was already received.
    HNET_RTRN_UNKNOWNTICKET = 10,
    /// The library failed internally (including a caught panic); the last error says
    /// where. The process is not affected.
    HNET_RTRN_INTERNALERROR = 11,
    /// A server application's request id is unknown, already answered, or no longer
    /// awaited by the gateway.
    HNET_RTRN_UNKNOWNREQUEST = 12,
    /// The message is larger than one transaction may carry.
    HNET_RTRN_TOOLARGE = 13,
    /// The client or server was shut down (`hnapi_client_shutdown`,
    /// `hnapi_server_shutdown`): the call returned at once, and the handle may be closed
    /// once every thread's call has returned.
    HNET_RTRN_SHUTDOWN = 14,
}

impl HnetRtrn {
    /// Every code, in value order.
    pub const ALL: [HnetRtrn; 15] = [
        Self::HNET_RTRN_SUCCESS,
        Self::HNET_RTRN_INVALIDPARAMETER,
        Self::HNET_RTRN_INVALIDFORMATERROR,
        Self::HNET_RTRN_REMOTETIMEOUT,
        Self::HNET_RTRN_DOMAINMISMATCH,
        Self::HNET_RTRN_ENCRYPTIONERROR,
        Self::HNET_RTRN_BUFFERTOOSMALL,
        Self::HNET_RTRN_PENDING,
        Self::HNET_RTRN_CONFIGERROR,
        Self::HNET_RTRN_CONNECTIONERROR,
        Self::HNET_RTRN_UNKNOWNTICKET,
        Self::HNET_RTRN_INTERNALERROR,
        Self::HNET_RTRN_UNKNOWNREQUEST,
        Self::HNET_RTRN_TOOLARGE,
        Self::HNET_RTRN_SHUTDOWN,
    ];

    /// The code's name as a NUL-terminated C string.
    pub fn c_name(self) -> &'static [u8] {
        match self {
            Self::HNET_RTRN_SUCCESS => b"HNET_RTRN_SUCCESS\0",
            Self::HNET_RTRN_INVALIDPARAMETER => b"HNET_RTRN_INVALIDPARAMETER\0",
            Self::HNET_RTRN_INVALIDFORMATERROR => b"HNET_RTRN_INVALIDFORMATERROR\0",
            Self::HNET_RTRN_REMOTETIMEOUT => b"HNET_RTRN_REMOTETIMEOUT\0",
            Self::HNET_RTRN_DOMAINMISMATCH => b"HNET_RTRN_DOMAINMISMATCH\0",
            Self::HNET_RTRN_ENCRYPTIONERROR => b"HNET_RTRN_ENCRYPTIONERROR\0",
            Self::HNET_RTRN_BUFFERTOOSMALL => b"HNET_RTRN_BUFFERTOOSMALL\0",
            Self::HNET_RTRN_PENDING => b"HNET_RTRN_PENDING\0",
            Self::HNET_RTRN_CONFIGERROR => b"HNET_RTRN_CONFIGERROR\0",
            Self::HNET_RTRN_CONNECTIONERROR => b"HNET_RTRN_CONNECTIONERROR\0",
            Self::HNET_RTRN_UNKNOWNTICKET => b"HNET_RTRN_UNKNOWNTICKET\0",
            Self::HNET_RTRN_INTERNALERROR => b"HNET_RTRN_INTERNALERROR\0",
            Self::HNET_RTRN_UNKNOWNREQUEST => b"HNET_RTRN_UNKNOWNREQUEST\0",
            Self::HNET_RTRN_TOOLARGE => b"HNET_RTRN_TOOLARGE\0",
            Self::HNET_RTRN_SHUTDOWN => b"HNET_RTRN_SHUTDOWN\0",
        }
    }

    /// The code with the value `code`.
    pub fn from_i32(code: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|c| *c as i32 == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_their_positions_and_names_match() {
        for (i, code) in HnetRtrn::ALL.iter().enumerate() {
            assert_eq!(*code as i32, i as i32);
            assert_eq!(HnetRtrn::from_i32(i as i32), Some(*code));
            let name = std::str::from_utf8(code.c_name()).unwrap();
            assert_eq!(name.trim_end_matches('\0'), format!("{code:?}"));
        }
        assert_eq!(HnetRtrn::from_i32(-1), None);
        assert_eq!(HnetRtrn::from_i32(15), None);
    }
}
