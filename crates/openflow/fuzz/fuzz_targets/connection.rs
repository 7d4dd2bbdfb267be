//! Any byte stream from a "switch", in any chunking: the connection must not
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openflow::conn::{Config, Connection};

fuzz_target!(|data: &[u8]| {
    let mut c = Connection::new(Config::default());
    // First byte picks the chunk size.
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    for chunk in rest.chunks(usize::from(n).max(1)) {
        if c.handle_input(chunk).is_err() {
            break;
        }
        while c.poll_event().is_some() {}
    }
});
