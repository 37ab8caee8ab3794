//! Content-Encoding for inspection: decode what upstream sent, and encode an annotated body
//! the same way again, so the client sees the encoding it negotiated.

use std::io::{Read, Write};

/// Decodes `body` per `Content-Encoding` (none, identity, gzip, x-gzip, deflate), refusing
/// anything that would decode beyond `limit` bytes. `Err` carries a reason for the log.
pub fn decode_body(
    encoding: Option<&str>,
    body: &[u8],
    limit: usize,
) -> Result<Vec<u8>, &'static str> {
    let encoding = encoding.map(|e| e.trim().to_ascii_lowercase());
    let mut out = Vec::new();
    let read = match encoding.as_deref() {
        None | Some("") | Some("identity") => return Ok(body.to_vec()),
        Some("gzip") | Some("x-gzip") => flate2::read::GzDecoder::new(body)
            .take(limit as u64 + 1)
            .read_to_end(&mut out),
        // "deflate" is zlib-wrapped by the RFC; some servers send it raw.
        Some("deflate") => match flate2::read::ZlibDecoder::new(body)
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
        {
            Ok(n) => Ok(n),
            Err(_) => {
                out.clear();
                flate2::read::DeflateDecoder::new(body)
                    .take(limit as u64 + 1)
                    .read_to_end(&mut out)
            }
        },
        Some(_) => return Err("unsupported content-encoding"),
    };
    match read {
        Ok(_) if out.len() > limit => Err("decoded body over the cap"),
        Ok(_) => Ok(out),
        Err(_) => Err("corrupt compressed body"),
    }
}

/// Encodes `body` with the same `Content-Encoding` it arrived in.
pub fn encode_body(encoding: Option<&str>, body: &[u8]) -> Vec<u8> {
    let encoding = encoding.map(|e| e.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        Some("gzip") | Some("x-gzip") => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(body).expect("writing to memory");
            enc.finish().expect("writing to memory")
        }
        Some("deflate") => {
            let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(body).expect("writing to memory");
            enc.finish().expect("writing to memory")
        }
        _ => body.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_and_deflate_round_trip() {
        for enc in ["gzip", "deflate"] {
            let encoded = encode_body(Some(enc), b"{\"error\":\"invalid_grant\"}");
            assert_eq!(
                decode_body(Some(enc), &encoded, 1024).unwrap(),
                b"{\"error\":\"invalid_grant\"}"
            );
        }
    }

    #[test]
    fn corrupt_oversized_and_unknown_encodings_are_refused() {
        assert_eq!(
            decode_body(Some("gzip"), b"not gzip", 1024),
            Err("corrupt compressed body")
        );
        let big = encode_body(Some("gzip"), &vec![b'a'; 10_000]);
        assert_eq!(
            decode_body(Some("gzip"), &big, 100),
            Err("decoded body over the cap")
        );
        assert_eq!(
            decode_body(Some("br"), b"x", 100),
            Err("unsupported content-encoding")
        );
    }
}
