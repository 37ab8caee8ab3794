//! File descriptors: the soft limit raised to the hard one at start, and connections capped
//! below what descriptors allow, so that a full house answers `503` instead of `accept`
//! failing with EMFILE (which also starves the admin port, and `/healthz` with it).

/// Descriptors kept for what is not a client connection: the upstream pool's spares, the
/// ledger database and its journal, the admin port and its clients, log and CA files.
pub const RESERVE: u64 = 128;

/// A client connection can hold two descriptors: its own, and its tunnel's or upstream's.
pub const PER_CONNECTION: u64 = 2;

/// The descriptor limits after [`raise`].
#[derive(Debug, Clone, Copy)]
pub struct Descriptors {
    pub soft: u64,
    pub hard: u64,
    /// The soft limit before it was raised, when it was.
    pub raised_from: Option<u64>,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit.
pub fn raise() -> std::io::Result<Descriptors> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    // `None` is "unlimited".
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current.unwrap_or(u64::MAX);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    let mut soft = before;
    if before < hard {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            soft = hard;
        }
    }
    Ok(Descriptors {
        soft,
        hard,
        raised_from: (soft != before).then_some(before),
    })
}

/// The connections that fit in `soft` descriptors, at most `wanted`.
pub fn connections_within(wanted: usize, soft: u64) -> usize {
    let fit = soft.saturating_sub(RESERVE) / PER_CONNECTION;
    (wanted as u64).min(fit.max(1)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_capped_below_the_descriptor_limit() {
        assert_eq!(connections_within(4096, 1024), 448);
        assert_eq!(connections_within(4096, 65_536), 4096);
        assert_eq!(connections_within(4096, 10), 1);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let limits = raise().expect("getrlimit");
        assert_eq!(limits.soft, limits.hard);
    }
}
