//! The WebSocket opening handshake's one check a proxy must make (RFC 6455
//! §4.2.2): the `Sec-WebSocket-Accept` an upstream answers `101` with is the
//! base64 of SHA-1 over the client's `Sec-WebSocket-Key` and a fixed GUID. An
//! answer without it is not a WebSocket server's, and tunnelling it would let
//! anything that says `101` take over the client connection.

use sha1::{Digest, Sha1};

const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key`.
pub fn websocket_accept(key: &[u8]) -> [u8; 28] {
    let mut sha = Sha1::new();
    sha.update(key.trim_ascii());
    sha.update(GUID);
    let digest: [u8; 20] = sha.finalize().into();
    base64_20(&digest)
}

/// Standard base64 (with padding) of 20 bytes: 28 characters.
fn base64_20(bytes: &[u8; 20]) -> [u8; 28] {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = [b'='; 28];
    let mut o = 0;
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        let emit = chunk.len() + 1;
        for i in 0..emit {
            out[o + i] = ALPHABET[(n >> (18 - 6 * i) & 63) as usize];
        }
        o += 4;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_6455_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            &websocket_accept(b"dGhlIHNhbXBsZSBub25jZQ=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(
            &websocket_accept(b" dGhlIHNhbXBsZSBub25jZQ== "),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
