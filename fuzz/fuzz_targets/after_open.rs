//! Everything the probe reads after the open - frames, fragments, control
//! frames, Close payloads, oversized announcements, invalid UTF-8 - in any
//! chunking, through the probe's own upgrade, conversation (the measured
//! exchange) and close.
//!
//! Properties: the run ends (the stream's end is the deadline); what is
//! allocated from the open to the close's end stays under
//! `max_message_bytes` plus a constant, whatever length is announced; a
//! refused reply is counted in `skipped_messages`; `last_reply` stays
//! short; a Close from the server is a clean close.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::Duration;

use wsprobe::outcome::{Outcome, Reason};
use wsprobe::probe::converse;
use wsprobe::probe::deadline::Deadline;
use wsprobe::probe::upgrade::{self, Request};
use wsprobe::probe::ws::{self, Ending};
use wsprobe_fuzz::{spec, Chunked, Counting, KEY, MAX_MESSAGE_BYTES};

#[global_allocator]
static ALLOC: Counting = Counting;

/// What the probe may hold besides one message: its read buffers (4 KiB
/// each in the gate and in tungstenite), the message's frame header, a
/// partial message and the record's fields. Measured peak above
/// `max_message_bytes` over the seed corpus and the local runs: see
/// docs/reliability.md.
const SLACK: usize = 16 * 1024;

fuzz_target!(|input: &[u8]| {
    let (seed, after) = Chunked::split(input);
    let spec = spec();
    let request = Request::with_key(spec, KEY);
    let mut bytes = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        upgrade::accept_for(KEY)
    )
    .into_bytes();
    bytes.extend_from_slice(after);
    let wire = Chunked::new(&bytes, seed);
    let mut outcome = Outcome::begin();
    let base = Counting::reset_peak();
    let Ok(mut socket) =
        upgrade::upgrade(spec, &request, wire, ws::config(spec), &mut outcome.meta)
    else {
        // Only a stream that ends inside the answer fails it.
        return;
    };
    // The stream's end stands for the deadline; this one is never reached.
    let deadline = Deadline::after(Duration::from_secs(3600));
    let talked = converse::converse(&mut socket, spec, &deadline, &mut outcome);
    let (result, ending) = (talked.result.err(), talked.ending);
    let server_closed = matches!(ending, Ending::ServerClosed);
    let clean = ws::close(socket, ending, None);
    let peak = Counting::peak().saturating_sub(base);
    assert!(
        peak <= MAX_MESSAGE_BYTES + SLACK,
        "{peak} bytes allocated for a {MAX_MESSAGE_BYTES}-byte limit"
    );

    let skipped = outcome.meta.skipped_messages;
    assert!(
        skipped.is_some(),
        "the message was sent, so skipped_messages is set"
    );
    if let Some(failure) = &result {
        if failure.error.contains("exceeds max_message_bytes") {
            assert_eq!(failure.reason, Reason::WsReplyMismatch);
            assert!(skipped >= Some(1), "a refused reply is a skipped one");
        }
    }
    if let Some(last) = &outcome.meta.last_reply {
        assert!(last.len() <= 256, "last_reply of {} bytes", last.len());
    }
    if server_closed {
        assert_eq!(clean, Some(true));
    }
});
