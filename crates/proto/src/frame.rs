//! Length-prefixed frames: a 4-byte big-endian length, then a JSON document.
//!
//! [`FrameDecoder`] takes bytes as they arrive and yields whole messages; it
//! owns no socket.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{de::DeserializeOwned, Serialize};

/// Frames larger than this are refused: a snapshot of 10,000 NICs is a few MB.
pub const MAX_FRAME_LEN: usize = 256 * 1024 * 1024;

const LEN_BYTES: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_LEN}-byte limit")]
    TooLarge(usize),
    #[error("malformed message")]
    Json(#[from] serde_json::Error),
}

/// Encodes one message as a frame.
pub fn encode<T: Serialize>(msg: &T) -> Result<Bytes, FrameError> {
    let body = serde_json::to_vec(msg)?;
    if body.len() > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut out = BytesMut::with_capacity(LEN_BYTES + body.len());
    out.put_u32(body.len() as u32);
    out.put_slice(&body);
    Ok(out.freeze())
}

/// Reassembles frames from a byte stream.
#[derive(Default)]
pub struct FrameDecoder {
    buf: BytesMut,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes received from the peer.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, if one has arrived.
    pub fn next_message<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        if self.buf.len() < LEN_BYTES {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_FRAME_LEN {
            return Err(FrameError::TooLarge(len));
        }
        if self.buf.len() < LEN_BYTES + len {
            self.buf.reserve(LEN_BYTES + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(LEN_BYTES);
        let body = self.buf.split_to(len);
        Ok(Some(serde_json::from_slice(&body)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AgentMessage, ServerMessage};

    #[test]
    fn frames_survive_arbitrary_splits() {
        let msgs = vec![
            AgentMessage::Ack {
                revision: 7,
                ready_nics: vec!["nic-1".into()],
            },
            AgentMessage::Nack {
                revision: 8,
                error: "boom".into(),
            },
        ];
        let mut wire = Vec::new();
        for m in &msgs {
            wire.extend_from_slice(&encode(m).unwrap());
        }
        for split in 0..wire.len() {
            let mut dec = FrameDecoder::new();
            let mut got = Vec::new();
            dec.push(&wire[..split]);
            while let Some(m) = dec.next_message::<AgentMessage>().unwrap() {
                got.push(m);
            }
            dec.push(&wire[split..]);
            while let Some(m) = dec.next_message::<AgentMessage>().unwrap() {
                got.push(m);
            }
            assert_eq!(got, msgs, "split at {split}");
        }
    }

    #[test]
    fn oversized_and_malformed_frames_are_errors() {
        let mut dec = FrameDecoder::new();
        dec.push(&u32::MAX.to_be_bytes());
        assert!(matches!(
            dec.next_message::<ServerMessage>(),
            Err(FrameError::TooLarge(_))
        ));

        let mut dec = FrameDecoder::new();
        dec.push(&3u32.to_be_bytes());
        dec.push(b"{x}");
        assert!(matches!(
            dec.next_message::<ServerMessage>(),
            Err(FrameError::Json(_))
        ));
    }
}
