//! libFuzzer target: `shardstream_tests::parsers::resume_state` must return a typed error or accept,
//! never panic or hang. Seeds: `tests/corpus/resume_state/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = shardstream_tests::parsers::resume_state(data);
});
