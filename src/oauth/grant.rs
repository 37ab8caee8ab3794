//! The grant types of Salesforce's token endpoint, parsed once from `grant_type`: rules, the
//! ledger and the metrics compare variants, not strings.

use serde::Serialize;

use super::JWT_BEARER;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    AuthorizationCode,
    RefreshToken,
    Password,
    ClientCredentials,
    JwtBearer,
    Saml2Bearer,
    TokenExchange,
    Device,
    /// No `grant_type` parameter.
    Missing,
    /// A value Salesforce does not know.
    Other,
}

impl GrantType {
    pub const ALL: [GrantType; 10] = [
        Self::AuthorizationCode,
        Self::RefreshToken,
        Self::Password,
        Self::ClientCredentials,
        Self::JwtBearer,
        Self::Saml2Bearer,
        Self::TokenExchange,
        Self::Device,
        Self::Missing,
        Self::Other,
    ];

    pub fn parse(value: Option<&str>) -> Self {
        match value {
            None | Some("") => Self::Missing,
            Some("authorization_code") => Self::AuthorizationCode,
            Some("refresh_token") => Self::RefreshToken,
            Some("password") => Self::Password,
            Some("client_credentials") => Self::ClientCredentials,
            Some(JWT_BEARER) => Self::JwtBearer,
            Some("urn:ietf:params:oauth:grant-type:saml2-bearer") => Self::Saml2Bearer,
            Some("urn:ietf:params:oauth:grant-type:token-exchange") => Self::TokenExchange,
            Some("device") => Self::Device,
            Some(_) => Self::Other,
        }
    }

    /// As Salesforce spells it; empty when absent, `other` when unknown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthorizationCode => "authorization_code",
            Self::RefreshToken => "refresh_token",
            Self::Password => "password",
            Self::ClientCredentials => "client_credentials",
            Self::JwtBearer => JWT_BEARER,
            Self::Saml2Bearer => "urn:ietf:params:oauth:grant-type:saml2-bearer",
            Self::TokenExchange => "urn:ietf:params:oauth:grant-type:token-exchange",
            Self::Device => "device",
            Self::Missing => "",
            Self::Other => "other",
        }
    }

    /// The metric label: a small fixed set (`none` when absent).
    pub fn label(self) -> &'static str {
        match self {
            Self::Missing => "none",
            Self::Saml2Bearer | Self::TokenExchange | Self::Device | Self::Other => "other",
            known => known.as_str(),
        }
    }

    /// Whether Salesforce knows this grant type.
    pub fn is_known(self) -> bool {
        !matches!(self, Self::Missing | Self::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_grant_type_round_trips() {
        for grant in GrantType::ALL.into_iter().filter(|g| g.is_known()) {
            assert_eq!(GrantType::parse(Some(grant.as_str())), grant);
        }
        assert_eq!(GrantType::parse(None), GrantType::Missing);
        assert_eq!(GrantType::parse(Some("refresh")), GrantType::Other);
        assert_eq!(GrantType::Other.label(), "other");
        assert_eq!(GrantType::Missing.label(), "none");
    }
}
