//! The layers around the forwarder, outermost first: the response timeout, then the request
//! metrics. Each is a `tower::Layer` assembled where the exchange stack is built
//! (`ProxyState::new`), so the forwarder itself only places, sends and maps.
//!
//! Must never: box a future. Each layer's future is a plain struct, held inside the one
//! `Box::pin` the stack's caller already makes, so a layer costs a request no allocation.

mod metrics;
mod timeout;

pub use metrics::{RequestMetrics, RequestMetricsLayer};
pub use timeout::{Deadline, ResponseTimeout, ResponseTimeoutLayer};
