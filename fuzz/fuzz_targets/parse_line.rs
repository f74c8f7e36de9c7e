//! Feeds arbitrary bytes to everything that reads from the network: the
//! line reader, then each line to every parser, and the whole input to the
//! manifest parser. Nothing may panic, and whatever parses must format back
//! to a line that parses to the same message (for answers: to the same
//! line).

#![no_main]

use libfuzzer_sys::fuzz_target;
use swarmline::pieces::Manifest;
use swarmline::protocol::{PeerRequest, Reply, TrackerRequest};
use swarmline::wire::LineReader;

fuzz_target!(|data: &[u8]| {
    let mut reader = LineReader::new(data, 1024);
    while let Ok(Some(line)) = reader.read_line() {
        let Ok(text) = line else { continue };
        if let Ok(request) = TrackerRequest::parse(&text) {
            assert_eq!(TrackerRequest::parse(&request.to_string()).as_ref(), Ok(&request));
        }
        if let Ok(request) = PeerRequest::parse(&text) {
            assert_eq!(PeerRequest::parse(&request.to_string()).as_ref(), Ok(&request));
        }
        if let Ok(reply) = Reply::parse(&text) {
            // Free text is cleaned of control characters when written, so
            // the written form is what must be stable.
            let written = reply.to_string();
            assert_eq!(Reply::parse(&written).map(|r| r.to_string()).as_ref(), Ok(&written));
        }
    }
    if let Ok(manifest) = Manifest::parse(data) {
        assert_eq!(manifest.to_string().as_bytes(), data);
    }
});
