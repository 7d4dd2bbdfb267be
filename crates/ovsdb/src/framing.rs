//! Splits an OVSDB byte stream into JSON texts.
//!
//! OVSDB's JSON-RPC has no framing: messages are JSON objects written back to
//! back (RFC 7047 section 4). We find where each one ends by tracking bracket
//! depth outside strings, so a `}` inside `"a}b"` or after `\"` does not count.

use crate::error::{Error, Result};

/// Default bound on one message. The largest messages are monitor replies
/// with every row of a big table; 64 MiB leaves room for a node with many
/// thousands of interfaces while still stopping a runaway peer.
pub const DEFAULT_MAX_MESSAGE: usize = 64 << 20;

/// Incremental JSON text splitter.
#[derive(Debug)]
pub struct Splitter {
    buf: Vec<u8>,
    /// Bytes of `buf` already scanned.
    pos: usize,
    /// Start of the message being scanned (valid while `depth > 0`).
    start: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
    max: usize,
}

impl Default for Splitter {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_MESSAGE)
    }
}

impl Splitter {
    pub fn new(max_message: usize) -> Self {
        Splitter {
            buf: Vec::new(),
            pos: 0,
            start: 0,
            depth: 0,
            in_string: false,
            escaped: false,
            max: max_message,
        }
    }

    /// Appends bytes received from the peer.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered but not yet returned as a message.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.consumed()
    }

    fn consumed(&self) -> usize {
        if self.depth > 0 {
            self.start
        } else {
            self.pos
        }
    }

    /// Returns the next complete JSON text, if one is buffered.
    ///
    /// An error is fatal for the stream: after it the splitter does not
    /// know where the next message starts.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>> {
        while self.pos < self.buf.len() {
            let b = self.buf[self.pos];
            self.pos += 1;
            if self.depth == 0 {
                match b {
                    b' ' | b'\t' | b'\r' | b'\n' => continue,
                    b'{' | b'[' => {
                        self.start = self.pos - 1;
                        self.depth = 1;
                    }
                    // A top-level scalar has no end we could find, and
                    // JSON-RPC messages are objects anyway.
                    _ => return Err(Error::Framing { byte: b }),
                }
            } else if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
            } else {
                match b {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => {
                        self.depth -= 1;
                        if self.depth == 0 {
                            let msg = self.buf[self.start..self.pos].to_vec();
                            self.compact();
                            return Ok(Some(msg));
                        }
                    }
                    _ => {}
                }
            }
            if self.depth > 0 && self.pos - self.start > self.max {
                return Err(Error::MessageTooLarge { limit: self.max });
            }
        }
        // Everything scanned; drop what is no longer needed so the buffer
        // holds at most one partial message.
        self.compact();
        Ok(None)
    }

    fn compact(&mut self) {
        let keep_from = self.consumed();
        if keep_from > 0 {
            self.buf.drain(..keep_from);
            self.pos -= keep_from;
            if self.depth > 0 {
                self.start -= keep_from;
            } else {
                self.start = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(s: &mut Splitter) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(m) = s.next_message().unwrap() {
            out.push(String::from_utf8(m).unwrap());
        }
        out
    }

    const STREAM: &str = concat!(
        r#"{"id":0,"method":"echo","params":[]}"#,
        "\n",
        r#"{"id":1,"result":[{"uuid":["uuid","36bd6d1a-6f3f-4b11-8e2b-0c4f0c35e7a9"]}],"error":null}"#,
        r#"  {"method":"update","params":["m",{"T":{"x":{"new":{"s":"}{][\"\\"}}}}],"id":null}"#,
        r#"[1,"]",{"a":"\\"}]"#,
        r#"{"s":"é}ü{"}"#,
    );

    fn expected() -> Vec<String> {
        let mut v = Vec::new();
        let de = serde_json::Deserializer::from_str(STREAM).into_iter::<serde_json::Value>();
        for x in de {
            v.push(x.unwrap());
        }
        v.iter().map(|x| x.to_string()).collect()
    }

    fn reparse(msgs: &[String]) -> Vec<String> {
        msgs.iter()
            .map(|m| {
                serde_json::from_str::<serde_json::Value>(m)
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn whole_stream_at_once() {
        let mut s = Splitter::default();
        s.push(STREAM.as_bytes());
        let msgs = split_all(&mut s);
        assert_eq!(msgs.len(), 5);
        assert_eq!(reparse(&msgs), expected());
        assert_eq!(s.buffered(), 0);
    }

    #[test]
    fn every_split_point_and_byte_by_byte() {
        let bytes = STREAM.as_bytes();
        let want = expected();
        for cut in 0..=bytes.len() {
            let mut s = Splitter::default();
            let mut msgs = Vec::new();
            s.push(&bytes[..cut]);
            msgs.extend(split_all(&mut s));
            s.push(&bytes[cut..]);
            msgs.extend(split_all(&mut s));
            assert_eq!(reparse(&msgs), want, "cut at {cut}");
        }
        let mut s = Splitter::default();
        let mut msgs = Vec::new();
        for b in bytes {
            s.push(std::slice::from_ref(b));
            msgs.extend(split_all(&mut s));
        }
        assert_eq!(reparse(&msgs), want);
    }

    #[test]
    fn pseudo_random_chunks() {
        let bytes = STREAM.as_bytes();
        let want = expected();
        // A small LCG: deterministic, no dev-dependency needed.
        let mut seed: u64 = 0x5eed;
        for _ in 0..200 {
            let mut s = Splitter::default();
            let mut msgs = Vec::new();
            let mut i = 0;
            while i < bytes.len() {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let n = 1 + (seed >> 33) as usize % 17;
                let end = (i + n).min(bytes.len());
                s.push(&bytes[i..end]);
                msgs.extend(split_all(&mut s));
                i = end;
            }
            assert_eq!(reparse(&msgs), want);
        }
    }

    #[test]
    fn partial_message_stays_buffered() {
        let mut s = Splitter::default();
        s.push(br#"{"a":"{"#);
        assert_eq!(s.next_message().unwrap(), None);
        assert_eq!(s.buffered(), 7);
        s.push(br#""}"#);
        assert_eq!(s.next_message().unwrap().unwrap(), br#"{"a":"{"}"#);
    }

    #[test]
    fn size_bound() {
        let mut s = Splitter::new(16);
        s.push(br#"{"a":"0123456789"}"#); // 18 bytes
        assert!(matches!(
            s.next_message(),
            Err(Error::MessageTooLarge { limit: 16 })
        ));

        // Exactly at the bound is fine, and the bound is per message.
        let mut s = Splitter::new(16);
        let exact = br#"{"a":"01234567"}"#;
        assert_eq!(exact.len(), 16);
        s.push(exact);
        s.push(exact);
        assert_eq!(split_all(&mut s).len(), 2);

        // An unterminated message is caught while it grows, before it ends.
        let mut s = Splitter::new(1024);
        s.push(b"{\"a\":\"");
        for _ in 0..200 {
            s.push(b"xxxxxxxx");
            if let Err(e) = s.next_message() {
                assert!(matches!(e, Error::MessageTooLarge { .. }));
                return;
            }
        }
        panic!("bound never hit");
    }

    #[test]
    fn garbage_between_messages_is_an_error() {
        let mut s = Splitter::default();
        s.push(b"{} 42");
        assert_eq!(s.next_message().unwrap().unwrap(), b"{}");
        assert!(matches!(
            s.next_message(),
            Err(Error::Framing { byte: b'4' })
        ));
    }
}
