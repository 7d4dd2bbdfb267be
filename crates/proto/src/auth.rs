//! Per-node credentials: a node's token is an HMAC of its name under the
//! cluster secret, so flowctl can check it without a lookup and an agent can
//! only ever claim its own node.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The token the agent of `node` presents.
pub fn node_token(cluster_secret: &[u8], node: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(cluster_secret).expect("HMAC takes any key length");
    mac.update(b"stacknet-node-token\0");
    mac.update(node.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `token` is the token of `node`, compared in constant time.
pub fn verify_node_token(cluster_secret: &[u8], node: &str, token: &str) -> bool {
    let Ok(bytes) = hex::decode(token) else {
        return false;
    };
    let mut mac =
        Hmac::<Sha256>::new_from_slice(cluster_secret).expect("HMAC takes any key length");
    mac.update(b"stacknet-node-token\0");
    mac.update(node.as_bytes());
    mac.verify_slice(&bytes).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_only_good_for_its_node() {
        let t = node_token(b"secret", "node-1");
        assert!(verify_node_token(b"secret", "node-1", &t));
        assert!(!verify_node_token(b"secret", "node-2", &t));
        assert!(!verify_node_token(b"other", "node-1", &t));
        assert!(!verify_node_token(b"secret", "node-1", "not-hex"));
    }
}
