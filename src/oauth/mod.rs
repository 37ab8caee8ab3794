//! What a token exchange says: the facts read from a `/services/oauth2/token` request and its
//! response, with every secret replaced by a keyed fingerprint before it leaves this module.
//!
//! Must never: keep or return a token, secret, password, assertion or code. The JWT assertion
//! is decoded for its claims and dropped; the signature is not checked.

mod codec;
mod fingerprint;
mod grant;
pub mod jwt;
mod request;
mod response;

pub use codec::{decode_body, encode_body};
pub use fingerprint::{Fingerprinter, short_client_id};
pub use grant::GrantType;
pub use request::{
    ClientIdSource, JwtFacts, RequestFacts, TokenPresence, TokenShape, basic_credentials,
};
pub use response::{ProxyFailure, ResponseFacts, SuccessFacts, nested_too_deep};

/// The grant types grantdoctor knows by name.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
