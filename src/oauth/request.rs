//! Facts of a token request: what a diagnosis needs recorded, with
//! secrets fingerprinted.

use std::collections::HashMap;

use http::{HeaderMap, header};
use serde::Serialize;

use super::jwt;
use super::{Fingerprinter, GrantType};

/// Where the client id came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientIdSource {
    Form,
    Basic,
    JwtIss,
    None,
}

/// How a `refresh_token` parameter looked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "fp")]
pub enum TokenPresence {
    Absent,
    Empty,
    /// `null`, `undefined`, `None`: a client that stored nothing and sent its placeholder.
    Placeholder,
    Present(String),
}

/// What a presented refresh token's text looks like, for telling a mangled value from a dead
/// one. Only the shape is kept, never the text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TokenShape {
    pub len: usize,
    /// `00D…!…`: an access token (org id, `!`), which no refresh ever accepts.
    pub access_token: bool,
    /// Wrapped in quotes: a JSON string or a shell value stored with its quotes.
    pub quoted: bool,
    /// Leading, trailing or inner whitespace (a newline from a secret file, a pasted value).
    pub whitespace: bool,
    /// A `%XX` escape left after the form decoding: the value was percent-encoded twice.
    pub double_encoded: bool,
}

impl TokenShape {
    pub fn of(token: &str) -> Self {
        let access_token = token.len() > 16
            && token.starts_with("00D")
            && token.as_bytes()[15] == b'!'
            && token[..15].bytes().all(|b| b.is_ascii_alphanumeric());
        let bytes = token.as_bytes();
        let double_encoded = bytes
            .windows(3)
            .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit());
        Self {
            len: token.chars().count(),
            access_token,
            quoted: token.len() >= 2
                && (token.starts_with('"') && token.ends_with('"')
                    || token.starts_with('\'') && token.ends_with('\'')),
            whitespace: token.chars().any(char::is_whitespace),
            double_encoded,
        }
    }
}

/// An assertion's header and claims, decoded and not verified.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JwtFacts {
    pub alg: Option<String>,
    pub iss: Option<String>,
    pub sub: Option<String>,
    pub aud: Vec<String>,
    /// Seconds since the epoch (a numeric string counts).
    pub exp: Option<f64>,
    pub exp_is_string: bool,
    pub iat: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RequestFacts {
    pub host: String,
    pub method_post: bool,
    pub content_type: Option<String>,
    pub form_encoded: bool,
    /// The body parses as JSON: the classic cause of `unsupported_grant_type`.
    pub json_body: bool,
    /// As sent, for the log line.
    pub grant_type: Option<String>,
    /// Parsed once: what rules and the ledger compare.
    pub grant: GrantType,
    pub client_id: Option<String>,
    pub client_id_source: ClientIdSource,
    pub has_client_secret: bool,
    pub has_code_verifier: bool,
    pub redirect_uri: Option<String>,
    pub refresh_token: TokenPresence,
    /// The shape of a present refresh token.
    pub refresh_shape: Option<TokenShape>,
    /// A `scope` parameter was sent (Salesforce refuses it on a refresh).
    pub has_scope: bool,
    /// Fingerprint of the client secret (form or Basic), to tell a rotated secret.
    pub client_secret_fp: Option<String>,
    /// Fingerprint of the assertion's `sub`, lowercased.
    pub subject_fp: Option<String>,
    pub code_fp: Option<String>,
    pub username: Option<String>,
    pub username_fp: Option<String>,
    pub jwt: Option<JwtFacts>,
    /// An `assertion` was sent but is not a decodable JWT.
    pub jwt_malformed: bool,
}

impl RequestFacts {
    /// Reads the facts from a buffered request; parameters come from the query string and,
    /// for form bodies, the body (which wins).
    pub fn parse(
        host: &str,
        method_post: bool,
        headers: &HeaderMap,
        query: Option<&str>,
        body: &[u8],
        fp: &Fingerprinter,
    ) -> Self {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let form_encoded = content_type.as_deref().is_some_and(|v| {
            v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
        let params = params_of(query, form_encoded.then_some(body));
        let json_body = !form_encoded
            && serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| v.is_object());
        let get = |name: &str| params.get(name).map(String::as_str);
        let basic = basic_credentials(headers);
        let secret = get("client_secret").filter(|s| !s.is_empty()).or(basic
            .as_ref()
            .map(|(_, s)| s.as_str())
            .filter(|s| !s.is_empty()));
        let client_secret_fp = secret.map(|s| fp.fingerprint(s));
        let assertion = get("assertion").filter(|a| !a.is_empty());
        let decoded = assertion.and_then(jwt::decode_parts);
        let jwt = decoded.as_ref().map(JwtFacts::of);
        let (client_id, client_id_source) =
            client_id_of(get("client_id"), basic.as_ref(), jwt.as_ref());
        let refresh_token = TokenPresence::of(get("refresh_token"), fp);
        let refresh_shape = match &refresh_token {
            TokenPresence::Present(_) => get("refresh_token").map(TokenShape::of),
            _ => None,
        };
        let subject_fp = jwt
            .as_ref()
            .and_then(|j| j.sub.as_deref())
            .map(|s| fp.fingerprint(&s.to_ascii_lowercase()));
        let username = get("username").filter(|u| !u.is_empty()).map(str::to_owned);
        Self {
            host: host.to_ascii_lowercase(),
            method_post,
            content_type,
            form_encoded,
            json_body,
            grant_type: get("grant_type")
                .filter(|g| !g.is_empty())
                .map(str::to_owned),
            grant: GrantType::parse(get("grant_type")),
            client_id,
            client_id_source,
            has_client_secret: get("client_secret").is_some_and(|s| !s.is_empty())
                || basic.is_some(),
            client_secret_fp,
            has_scope: get("scope").is_some(),
            refresh_shape,
            subject_fp,
            has_code_verifier: get("code_verifier").is_some_and(|s| !s.is_empty()),
            redirect_uri: get("redirect_uri").map(str::to_owned),
            refresh_token,
            code_fp: get("code")
                .filter(|c| !c.is_empty())
                .map(|c| fp.fingerprint(c)),
            username_fp: username
                .as_deref()
                .map(|u| fp.fingerprint(&u.to_ascii_lowercase())),
            username,
            jwt_malformed: assertion.is_some() && decoded.is_none(),
            jwt,
        }
    }

    pub fn refresh_fp(&self) -> Option<&str> {
        match &self.refresh_token {
            TokenPresence::Present(fp) => Some(fp),
            _ => None,
        }
    }
}

/// The parameters of the query and, when form-encoded, of the body (the body's win).
fn params_of(query: Option<&str>, form: Option<&[u8]>) -> HashMap<String, String> {
    let mut params: HashMap<String, String> = query
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    if let Some(body) = form {
        params.extend(form_urlencoded::parse(body).into_owned());
    }
    params
}

/// Who the client says it is: the form's `client_id`, else Basic authentication, else the
/// JWT's issuer.
fn client_id_of(
    form: Option<&str>,
    basic: Option<&(String, String)>,
    jwt: Option<&JwtFacts>,
) -> (Option<String>, ClientIdSource) {
    match (form.filter(|c| !c.is_empty()), basic, jwt) {
        (Some(id), _, _) => (Some(id.to_owned()), ClientIdSource::Form),
        (None, Some((id, _)), _) => (Some(id.clone()), ClientIdSource::Basic),
        (None, None, Some(JwtFacts { iss: Some(iss), .. })) => {
            (Some(iss.clone()), ClientIdSource::JwtIss)
        }
        _ => (None, ClientIdSource::None),
    }
}

impl JwtFacts {
    fn of(parts: &jwt::JwtParts) -> Self {
        let text = |name: &str| parts.claims[name].as_str().map(str::to_owned);
        Self {
            alg: parts.header["alg"].as_str().map(str::to_owned),
            iss: text("iss"),
            sub: text("sub"),
            aud: jwt::audiences(&parts.claims),
            exp: jwt::number_claim(&parts.claims, "exp"),
            exp_is_string: parts.claims["exp"].is_string(),
            iat: jwt::number_claim(&parts.claims, "iat"),
        }
    }
}

impl TokenPresence {
    /// The `refresh_token` parameter as sent: missing, empty, a placeholder a client wrote
    /// for "none", or a token (kept only as its fingerprint).
    fn of(value: Option<&str>, fp: &Fingerprinter) -> Self {
        match value {
            None => Self::Absent,
            Some(t) if t.trim().is_empty() => Self::Empty,
            Some(t)
                if ["null", "undefined", "none", "nil"]
                    .contains(&t.trim().to_ascii_lowercase().as_str()) =>
            {
                Self::Placeholder
            }
            Some(t) => Self::Present(fp.fingerprint(t)),
        }
    }
}

/// HTTP Basic client credentials (id, secret), form-decoded as RFC 6749 §2.3.1 asks.
/// The secret is returned for the emulator, which checks it; request facts keep only the id.
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    let unescape = |s: &str| {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((unescape(id)?, unescape(secret)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(body: &str, content_type: &str) -> RequestFacts {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, content_type.parse().unwrap());
        RequestFacts::parse(
            "Login.Salesforce.com",
            true,
            &headers,
            None,
            body.as_bytes(),
            &Fingerprinter::from_key(&[7; 32]),
        )
    }

    #[test]
    fn a_refresh_request_keeps_a_fingerprint_not_the_token() {
        let f = facts(
            "grant_type=refresh_token&client_id=3MVG9x&refresh_token=5Aep861SECRET",
            "application/x-www-form-urlencoded",
        );
        assert_eq!(f.grant, GrantType::RefreshToken);
        assert_eq!(f.client_id.as_deref(), Some("3MVG9x"));
        assert_eq!(f.host, "login.salesforce.com");
        let text = serde_json::to_string(&f).unwrap();
        assert!(!text.contains("SECRET"), "{text}");
        assert!(f.refresh_fp().unwrap().starts_with("fp_"));
    }

    #[test]
    fn placeholders_and_empty_tokens_are_told_apart() {
        let ct = "application/x-www-form-urlencoded";
        assert_eq!(
            facts("grant_type=refresh_token&refresh_token=undefined", ct).refresh_token,
            TokenPresence::Placeholder
        );
        assert_eq!(
            facts("grant_type=refresh_token&refresh_token=", ct).refresh_token,
            TokenPresence::Empty
        );
        assert_eq!(
            facts("grant_type=refresh_token", ct).refresh_token,
            TokenPresence::Absent
        );
    }

    #[test]
    fn a_json_body_is_noticed_and_not_read_as_a_form() {
        let f = facts(r#"{"grant_type":"password"}"#, "application/json");
        assert!(f.json_body && !f.form_encoded);
        assert_eq!(f.grant_type, None);
    }

    #[test]
    fn jwt_claims_are_decoded_and_exp_may_be_a_string() {
        use base64::Engine;
        let enc = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let assertion = format!(
            "{}.{}.c2ln",
            enc(serde_json::json!({"alg":"RS256"})),
            enc(
                serde_json::json!({"iss":"3MVG9j","sub":"a@b.c","aud":"https://login.salesforce.com","exp":"1700000000"})
            )
        );
        let f = facts(
            &format!(
                "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
            ),
            "application/x-www-form-urlencoded",
        );
        let jwt = f.jwt.unwrap();
        assert_eq!(jwt.exp, Some(1_700_000_000.0));
        assert!(jwt.exp_is_string);
        assert_eq!(f.client_id.as_deref(), Some("3MVG9j"));
        assert_eq!(f.client_id_source, ClientIdSource::JwtIss);
        let malformed = facts(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=abc",
            "application/x-www-form-urlencoded",
        );
        assert!(malformed.jwt_malformed);
    }
}
