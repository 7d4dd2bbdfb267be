//! Any bytes: parsing must not panic, and what parses re-encodes to a
//! fixed point.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openflow::Message;

fuzz_target!(|data: &[u8]| {
    let Ok((xid, m)) = Message::parse(data) else {
        return;
    };
    let Ok(once) = m.to_bytes(xid) else {
        return;
    };
    let Ok((_, again)) = Message::parse(&once) else {
        panic!("our own encoding does not parse: {m:?}");
    };
    assert_eq!(again.to_bytes(xid).ok(), Some(once));
});
