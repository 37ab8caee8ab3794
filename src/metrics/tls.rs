//! The family of client TLS handshakes that failed, and the classification of why.
//!
//! Must never: put the acceptor's error text in a label; it is mapped onto
//! [`TLS_FAILURE_REASONS`], a fixed set.

use super::preset::Known;
use super::register::Described;
use super::{Counters, Metrics};

/// Client TLS failure reasons, as [`tls_failure_reason`] names them.
pub const TLS_FAILURE_REASONS: &[&str] = &[
    "no_sni",
    "unknown_ca",
    "bad_certificate",
    "protocol",
    "timeout",
    "eof",
    "other",
];

pub(super) const CLIENT_TLS_FAILURES: Described<Counters> = Described {
    name: "client_tls_failures",
    help: "Intercepted connections whose TLS handshake with the client failed, by reason",
    of: |m| &m.client_tls_failures,
};

pub(super) const KNOWN: &[Known] = &[(&CLIENT_TLS_FAILURES, &[("reason", TLS_FAILURE_REASONS)])];

impl Metrics {
    /// One client TLS handshake that failed, classified from the acceptor's error.
    pub fn client_tls_failed(&self, error: &std::io::Error) {
        Self::count(
            &self.client_tls_failures,
            &[("reason", tls_failure_reason(error))],
        );
    }
}

/// Why a client's TLS handshake failed, from the error the acceptor returned. Alerts the
/// client sent name the usual culprit: it does not trust grantdoctor's CA.
pub fn tls_failure_reason(error: &std::io::Error) -> &'static str {
    use rustls::{AlertDescription as Alert, Error as Tls};
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::TimedOut => return "timeout",
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => {
            return "eof";
        }
        _ => {}
    }
    let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<Tls>()) else {
        return "other";
    };
    match tls {
        Tls::AlertReceived(Alert::UnknownCA) => "unknown_ca",
        Tls::AlertReceived(
            Alert::BadCertificate
            | Alert::CertificateUnknown
            | Alert::UnsupportedCertificate
            | Alert::CertificateExpired
            | Alert::CertificateRevoked
            // rustls clients say this when a CA of the same name signed someone else's leaf.
            | Alert::DecryptError,
        ) => "bad_certificate",
        // The certificate resolvers answer nothing only for a hello without a usable name.
        Tls::General(message) if message.contains("no server certificate") => "no_sni",
        Tls::InvalidMessage(_)
        | Tls::InappropriateMessage { .. }
        | Tls::InappropriateHandshakeMessage { .. }
        | Tls::PeerIncompatible(_)
        | Tls::PeerMisbehaved(_)
        | Tls::NoApplicationProtocol
        | Tls::DecryptError => "protocol",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_failures_are_classified_from_the_acceptor_error() {
        use std::io::{Error, ErrorKind};
        let tls = |e: rustls::Error| Error::new(ErrorKind::InvalidData, e);
        let alert = |a| tls(rustls::Error::AlertReceived(a));
        assert_eq!(
            tls_failure_reason(&alert(rustls::AlertDescription::UnknownCA)),
            "unknown_ca"
        );
        assert_eq!(
            tls_failure_reason(&alert(rustls::AlertDescription::BadCertificate)),
            "bad_certificate"
        );
        assert_eq!(
            tls_failure_reason(&alert(rustls::AlertDescription::DecryptError)),
            "bad_certificate"
        );
        assert_eq!(
            tls_failure_reason(&tls(rustls::Error::General(
                "no server certificate chain resolved".into()
            ))),
            "no_sni"
        );
        assert_eq!(
            tls_failure_reason(&tls(rustls::Error::InvalidMessage(
                rustls::InvalidMessage::InvalidContentType
            ))),
            "protocol"
        );
        assert_eq!(
            tls_failure_reason(&Error::from(ErrorKind::UnexpectedEof)),
            "eof"
        );
        assert_eq!(
            tls_failure_reason(&Error::from(ErrorKind::TimedOut)),
            "timeout"
        );
        assert_eq!(tls_failure_reason(&Error::other("odd")), "other");
        for reason in [
            "unknown_ca",
            "bad_certificate",
            "no_sni",
            "protocol",
            "eof",
            "timeout",
            "other",
        ] {
            assert!(TLS_FAILURE_REASONS.contains(&reason));
        }
    }
}
