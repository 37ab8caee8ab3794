//! The one body type that flows through the proxy, and helpers to build it.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The error of a body: whatever the underlying stream failed with. A named type rather than
/// a bare `Box<dyn Error>` so that generic services over `ProxyBody` stay `Send` in async code.
#[derive(Debug)]
pub struct BodyError(pub BoxError);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Streaming or buffered, every request and response body in the proxy is this type.
pub type ProxyBody = BoxBody<Bytes, BodyError>;

pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub fn full(data: impl Into<Bytes>) -> ProxyBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Boxes any body whose errors can be boxed (hyper's `Incoming` among them).
pub fn boxed<B>(body: B) -> ProxyBody
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(|e| BodyError(e.into())).boxed()
}

/// Bytes already read from a body, followed by the rest of it.
pub fn prefixed(prefix: Bytes, rest: ProxyBody) -> ProxyBody {
    Prefixed {
        prefix: Some(prefix),
        rest,
    }
    .boxed()
}

pin_project_lite::pin_project! {
    struct Prefixed {
        prefix: Option<Bytes>,
        #[pin]
        rest: ProxyBody,
    }
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BodyError>>> {
        let this = self.project();
        if let Some(prefix) = this.prefix.take() {
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(prefix))));
        }
        this.rest.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let rest = self.rest.size_hint();
        let extra = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let mut hint = http_body::SizeHint::new();
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + extra);
        }
        hint.set_lower(rest.lower() + extra);
        hint
    }
}
