//! Which Salesforce front door a request came through ([`HostCtx`]) and what is visible from
//! there: which orgs a host reaches and which connected apps a client id names. Must never:
//! decide on credentials or users — a host only narrows which org and app are in play.

use super::{App, Org, World};
use crate::emulator::errors::{self, OAuthError};
use crate::emulator::model::OrgKind;

/// Which Salesforce front door a request came through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostCtx {
    Login,
    Test,
    MyDomain { org_id: String },
    Site { org_id: String, url: String },
    Unknown,
}

impl HostCtx {
    pub(super) fn is_generic(&self) -> bool {
        matches!(self, Self::Login | Self::Test)
    }
}

impl World {
    pub fn classify(&self, host: &str) -> HostCtx {
        let host = host.to_ascii_lowercase();
        match host.as_str() {
            "login.salesforce.com" => return HostCtx::Login,
            "test.salesforce.com" => return HostCtx::Test,
            _ => {}
        }
        for org in &self.orgs {
            if org.my_domain_host() == host {
                return HostCtx::MyDomain {
                    org_id: org.id.clone(),
                };
            }
            for site in &org.spec.sites {
                let site_host = site
                    .trim_start_matches("https://")
                    .split('/')
                    .next()
                    .unwrap_or_default();
                if site_host.eq_ignore_ascii_case(&host) {
                    return HostCtx::Site {
                        org_id: org.id.clone(),
                        url: site.trim_end_matches('/').to_owned(),
                    };
                }
            }
        }
        HostCtx::Unknown
    }

    pub(super) fn reaches(&self, ctx: &HostCtx, org: &Org) -> bool {
        match ctx {
            HostCtx::Login => org.spec.kind == OrgKind::Production,
            HostCtx::Test => org.spec.kind == OrgKind::Sandbox,
            HostCtx::MyDomain { org_id } | HostCtx::Site { org_id, .. } => *org_id == org.id,
            HostCtx::Unknown => false,
        }
    }

    /// The app behind a client id, as visible from this host: External Client Apps only
    /// through their own org's My Domain, classic apps from hosts of the same org kind.
    pub(super) fn visible_app(
        &self,
        ctx: &HostCtx,
        client_id: Option<&str>,
    ) -> Result<&App, OAuthError> {
        let app = client_id
            .and_then(|id| self.apps.get(id))
            .ok_or(errors::CLIENT_ID_INVALID)?;
        let owner = self
            .org_by_name(&app.spec.org)
            .ok_or(errors::CLIENT_ID_INVALID)?;
        if app.spec.external_client_app {
            if ctx.is_generic() {
                return Err(errors::ECA_NOT_INSTALLED);
            }
            return if self.reaches(ctx, owner) {
                Ok(app)
            } else {
                Err(errors::CLIENT_ID_INVALID)
            };
        }
        // A production app's key is unknown at sandbox hosts and the other way round.
        let same_kind = self
            .orgs
            .iter()
            .any(|o| o.spec.kind == owner.spec.kind && self.reaches(ctx, o));
        if same_kind {
            Ok(app)
        } else {
            Err(errors::CLIENT_ID_INVALID)
        }
    }
}
