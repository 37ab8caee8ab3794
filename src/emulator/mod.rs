//! A faithful Salesforce token endpoint for tests, demos and rehearsals (`grantdoctor emulate`).
//!
//! Built from Salesforce's documentation and observed answers (sources in `docs/emulator.md`):
//! error strings are exact (see [`errors`]), success
//! bodies have Salesforce's shape, and the rules that make tokens die — the 5-approval limit,
//! refresh policies, rotation, concurrent refreshes, sandbox refreshes — are implemented in
//! [`world`], driven by a virtual clock. The REST query endpoint answers the SOQL an admin tool
//! sends about approvals, users, logins and apps from the same state ([`query`]). Must never: be mistaken for a secure server; it keeps
//! secrets in memory in the clear, as a test double does.

pub mod clock;
pub mod control;
pub mod errors;
pub mod ids;
pub mod jwt;
pub mod logins;
pub mod model;
pub mod query;
pub mod records;
pub mod server;
pub mod soql;
pub mod world;

use std::sync::Arc;

pub use server::Emulator;

impl Emulator {
    /// An emulator preloaded with a scenario (orgs first, then users, then apps).
    pub fn from_scenario(scenario: model::Scenario) -> Result<Self, world::ControlError> {
        let emulator = Self::default();
        {
            let mut world = emulator.world();
            if let Some(settings) = scenario.settings {
                world.settings = settings;
            }
            for org in scenario.orgs {
                world.add_org(org)?;
            }
            for user in scenario.users {
                world.add_user(user)?;
            }
            for app in scenario.apps {
                world.add_app(app)?;
            }
        }
        Ok(emulator)
    }

    pub fn shared(self) -> Arc<Self> {
        Arc::new(self)
    }
}
