//! Answers stored in the shared database so that only their rightful callers can read them:
//! a twin of a rotating refresh within the replay window, or a follower of a coalesced
//! refresh on another replica. Each answer is sealed (ChaCha20-Poly1305) under a key derived
//! (HKDF-SHA256) from what only such a caller presents — the old refresh token and its client
//! credentials, or the whole token request — and filed under an id derived the same way with
//! another label. The database holds neither the inputs nor the key: a row cannot be opened,
//! or even matched to a request, without presenting the secret again.
//!
//! Must never: store what it derives from, or the derived key.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

const SALT: &[u8] = b"grantdoctor sealed answers v1";
const NONCE_LEN: usize = 12;

/// An id and a key derived from one caller's secrets, for one purpose.
pub struct Sealer {
    id: [u8; 32],
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

/// A length of output for HKDF's expand.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

impl Sealer {
    /// Derives from `parts` (each length-prefixed, so no two lists collide) for `purpose`.
    pub fn derive(purpose: &str, parts: &[&[u8]]) -> Self {
        let mut ikm = Vec::new();
        for part in parts {
            ikm.extend_from_slice(&(part.len() as u64).to_be_bytes());
            ikm.extend_from_slice(part);
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(&ikm);
        let id_info = [purpose.as_bytes(), b"/id"];
        let mut id = [0u8; 32];
        prk.expand(&id_info, Len(32))
            .and_then(|okm| okm.fill(&mut id))
            .expect("32 bytes is within HKDF-SHA256's output");
        let key_info = [purpose.as_bytes(), b"/key"];
        let key: UnboundKey = prk
            .expand(&key_info, &aead::CHACHA20_POLY1305)
            .expect("a ChaCha20 key is within HKDF-SHA256's output")
            .into();
        Self {
            id,
            key: LessSafeKey::new(key),
        }
    }

    /// Where the sealed answer is filed.
    pub fn id(&self) -> &[u8; 32] {
        &self.id
    }

    /// Nonce, ciphertext and tag; the id is bound in as associated data, so a row copied
    /// under another id does not open.
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system's random source works");
        let mut sealed = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&self.id),
                &mut sealed,
            )
            .expect("an answer is far below ChaCha20-Poly1305's limit");
        let mut out = nonce.to_vec();
        out.append(&mut sealed);
        out
    }

    /// The plain answer, or `None` when the row was sealed for someone else or altered.
    pub fn open(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(&self.id), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    }
}

/// A token response as it is sealed: status, headers and body, exactly as the client got it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredAnswer {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

/// The first byte of the binary form. JSON (what earlier builds sealed, at most a replay
/// window ago) starts with `{`.
const BINARY: u8 = 1;

impl StoredAnswer {
    /// Length-prefixed, in one allocation: the body is copied, not spelled out as numbers.
    pub fn to_bytes(&self) -> Vec<u8> {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| 8 + n.len() + v.len())
            .sum();
        let mut out = Vec::with_capacity(11 + headers + self.body.len());
        out.push(BINARY);
        out.extend_from_slice(&self.status.to_be_bytes());
        out.extend_from_slice(&(self.headers.len() as u32).to_be_bytes());
        for (name, value) in &self.headers {
            put(&mut out, name.as_bytes());
            put(&mut out, value);
        }
        put(&mut out, &self.body);
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        match bytes.first()? {
            b'{' => serde_json::from_slice(bytes).ok(),
            &BINARY => {
                let mut rest = &bytes[1..];
                let status = u16::from_be_bytes(take(&mut rest, 2)?.try_into().ok()?);
                let count = u32::from_be_bytes(take(&mut rest, 4)?.try_into().ok()?);
                let mut headers = Vec::new();
                for _ in 0..count {
                    let name = String::from_utf8(field(&mut rest)?.to_vec()).ok()?;
                    headers.push((name, field(&mut rest)?.to_vec()));
                }
                let body = field(&mut rest)?.to_vec();
                rest.is_empty().then_some(Self {
                    status,
                    headers,
                    body,
                })
            }
            _ => None,
        }
    }
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rest.len() < n {
        return None;
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Some(head)
}

fn field<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_be_bytes(take(rest, 4)?.try_into().ok()?);
    take(rest, len as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &[u8] = b"5Aep861TSESvWeug_xvFHRBTTbf_YrTWgEyjBJrfhWfOQWYuJ6_ZEbjDpcSkakM0t1.old";
    const CREDS: &[u8] = b"client-credentials-digest";

    #[test]
    fn only_the_same_token_and_credentials_open_a_sealed_answer() {
        let answer = b"{\"refresh_token\":\"5Aep-new\"}";
        let sealed = Sealer::derive("replay", &[OLD, CREDS]).seal(answer);
        let again = Sealer::derive("replay", &[OLD, CREDS]);
        assert_eq!(again.open(&sealed).as_deref(), Some(&answer[..]));
        let other_token = Sealer::derive("replay", &[b"5Aep-another-token", CREDS]);
        assert_eq!(other_token.open(&sealed), None);
        let other_credentials = Sealer::derive("replay", &[OLD, b"other"]);
        assert_eq!(other_credentials.open(&sealed), None);
        let other_purpose = Sealer::derive("flight", &[OLD, CREDS]);
        assert_eq!(other_purpose.open(&sealed), None);
        assert_ne!(other_token.id(), again.id());
    }

    #[test]
    fn the_sealed_row_holds_neither_the_answer_nor_the_token() {
        let answer = b"{\"refresh_token\":\"5Aep-new-refresh-token\"}";
        let sealer = Sealer::derive("replay", &[OLD, CREDS]);
        let sealed = sealer.seal(answer);
        let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
        assert!(!contains(&sealed, b"5Aep-new-refresh-token"));
        assert!(!contains(&sealed, OLD));
        assert!(!contains(sealer.id(), &OLD[..8]));
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(sealer.open(&altered), None);
    }

    #[test]
    fn an_answer_round_trips() {
        let answer = StoredAnswer {
            status: 200,
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: b"{}".to_vec(),
        };
        let bytes = answer.to_bytes();
        assert_eq!(StoredAnswer::from_bytes(&bytes), Some(answer.clone()));
        // What an earlier build sealed still opens.
        let json = serde_json::to_vec(&answer).unwrap();
        assert_eq!(StoredAnswer::from_bytes(&json), Some(answer));
        // Cut short, padded or of an unknown form: refused, never misread.
        for bad in [
            &bytes[..bytes.len() - 1],
            &[bytes.as_slice(), b"x"].concat(),
            b"\x07",
        ] {
            assert_eq!(StoredAnswer::from_bytes(bad), None);
        }
        assert_eq!(StoredAnswer::from_bytes(b""), None);
    }

    #[test]
    fn the_body_is_stored_as_bytes_not_spelled_out() {
        let answer = StoredAnswer {
            status: 400,
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: vec![b'x'; 3000],
        };
        assert!(answer.to_bytes().len() < 3100);
    }
}
