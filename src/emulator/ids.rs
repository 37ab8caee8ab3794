//! Salesforce-shaped identifiers and tokens: 18-character case-safe ids, access tokens that
//! start with the 15-character org id and `!`, opaque refresh tokens and codes.

use ring::rand::{SecureRandom, SystemRandom};

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `len` random base-62 characters.
pub fn random_base62(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("system randomness is available");
    bytes
        .iter()
        .map(|b| BASE62[(*b as usize) % BASE62.len()] as char)
        .collect()
}

/// A new 18-character id with the given 3-character key prefix (`00D` org, `005` user).
pub fn new_id(prefix: &str) -> String {
    let tail = random_base62(12 - prefix.len() + 3);
    let id15 = format!(
        "{prefix}{}{}",
        "0".repeat(3),
        &tail[..15 - prefix.len() - 3]
    );
    to_18(&id15)
}

/// The case-safe 18-character form of a 15-character id: three check characters, one per
/// five-character chunk, encoding which characters are upper case.
pub fn to_18(id15: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    let mut out = id15.to_owned();
    for chunk in id15.as_bytes().chunks(5) {
        let mut bits = 0usize;
        for (i, c) in chunk.iter().enumerate() {
            if c.is_ascii_uppercase() {
                bits |= 1 << i;
            }
        }
        out.push(ALPHABET[bits] as char);
    }
    out
}

pub fn access_token(org_id: &str) -> String {
    format!("{}!{}", &org_id[..15], random_base62(96))
}

pub fn refresh_token() -> String {
    format!("5Aep861{}", random_base62(80))
}

pub fn authorization_code() -> String {
    format!("aPrx{}", random_base62(60))
}

pub fn consumer_key() -> String {
    format!("3MVG9{}", random_base62(80))
}

pub fn consumer_secret() -> String {
    random_base62(64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_case_safe_suffix_matches_salesforces_algorithm() {
        // Worked example: only the first character of the first chunk is upper case.
        assert_eq!(to_18("001000000000000"), "001000000000000AAA");
        let id = to_18("a0B1cD2eF3gH4iJ");
        // chunk "a0B1c": B at index 2 -> 4 -> 'E'; "D2eF3": D(0),F(3) -> 9 -> 'J'; "gH4iJ": H(1),J(4) -> 18 -> 'S'
        assert_eq!(&id[15..], "EJS");
    }

    #[test]
    fn ids_and_tokens_have_salesforce_shapes() {
        let org = new_id("00D");
        assert_eq!(org.len(), 18);
        assert!(org.starts_with("00D"));
        let token = access_token(&org);
        assert_eq!(&token[..16], format!("{}!", &org[..15]));
        assert!(refresh_token().starts_with("5Aep861"));
    }
}
