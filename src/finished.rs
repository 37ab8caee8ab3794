//! A token response read whole, as it goes to the client: the one buffered response the
//! token path, coalescing and the rotated-token guard hand each other.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};

use crate::body::{self, ProxyBody};

/// A token response read whole: shareable between coalesced callers and replayable by the
/// rotated-token guard.
#[derive(Debug, Clone)]
pub struct Finished {
    pub parts: http::response::Parts,
    pub body: Bytes,
}

impl Finished {
    pub fn new(status: StatusCode, headers: HeaderMap, body: Bytes) -> Self {
        let (mut parts, ()) = Response::new(()).into_parts();
        parts.status = status;
        parts.headers = headers;
        Self { parts, body }
    }

    /// A copy for one more caller.
    pub fn response(&self) -> Response<ProxyBody> {
        Response::from_parts(self.parts.clone(), body::full(self.body.clone()))
    }

    /// The response itself when no other caller shares it, a copy otherwise.
    pub fn into_response(self: Arc<Self>) -> Response<ProxyBody> {
        match Arc::try_unwrap(self) {
            Ok(finished) => Response::from_parts(finished.parts, body::full(finished.body)),
            Err(shared) => shared.response(),
        }
    }
}
