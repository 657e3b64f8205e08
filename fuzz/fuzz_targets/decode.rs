//! Feeds arbitrary bytes to the 3.1.1 and 5.0 decoders: any panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = plantd_edge::protocol::decode_all(data, 1 << 20);
});
