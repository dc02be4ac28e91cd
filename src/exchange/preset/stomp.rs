//! STOMP 1.0 to 1.2 over WebSocket: CONNECT -> CONNECTED, and a receipt
//! round trip on DISCONNECT, the one frame every broker tested honours
//! `receipt` on (stomp-broker-js ignores it on SUBSCRIBE). A DISCONNECT
//! ends the session, so the measured exchange happens once per socket.

use super::{refused, Context, Options, Plan, Reply};
use crate::exchange::{Message, Verdict};

pub(super) fn plan(options: &mut Options, context: &Context) -> Plan {
    let host = options
        .string("host")
        .unwrap_or_else(|| context.host.to_owned());
    let mut connect = format!("CONNECT\naccept-version:1.0,1.1,1.2\nhost:{host}\nheart-beat:0,0\n");
    for option in ["login", "passcode"] {
        if let Some(value) = options.string(option) {
            if value.contains(['\n', '\r', '\0']) {
                options.error(option, "must not contain CR, LF or NUL");
            }
            connect.push_str(&format!("{option}:{value}\n"));
        }
    }
    if host.contains(['\n', '\r', '\0', ':']) {
        options.error("host", "must not contain CR, LF, NUL or ':'");
    }
    connect.push_str("\n\0");
    let disconnect = Message::Text("DISCONNECT\nreceipt:${SEQ}\n\n\0".to_owned());
    let mut plan = Plan::new(disconnect, Reply::StompReceipt)
        .step(Some(Message::Text(connect)), Some(Reply::StompConnected));
    plan.protocols = ["v12.stomp", "v11.stomp", "v10.stomp"]
        .map(String::from)
        .to_vec();
    plan.single = Some("the measured DISCONNECT receipt ends the STOMP session");
    plan.measured_ends_session = true;
    plan
}

/// A frame's command, after any heart-beat EOLs before it.
fn command(payload: &[u8]) -> &[u8] {
    let start = payload
        .iter()
        .position(|b| !matches!(b, b'\n' | b'\r'))
        .unwrap_or(payload.len());
    let frame = &payload[start..];
    let end = frame
        .iter()
        .position(|b| matches!(b, b'\n' | b'\r'))
        .unwrap_or(frame.len());
    &frame[..end]
}

/// A header's value in a frame (the first occurrence wins, as 1.2 says).
fn header<'p>(payload: &'p [u8], name: &str) -> Option<&'p [u8]> {
    let head_end = memchr::memmem::Finder::new(b"\n\n")
        .find(payload)
        .unwrap_or(payload.len());
    payload[..head_end]
        .split(|b| *b == b'\n')
        .skip(1)
        .find_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            line.strip_prefix(name.as_bytes())?.strip_prefix(b":")
        })
}

fn error_frame(payload: &[u8]) -> Verdict {
    let message = header(payload, "message").unwrap_or(b"(no message header)");
    refused("STOMP ERROR", &String::from_utf8_lossy(message))
}

pub(super) fn judge_connected(payload: &[u8]) -> Verdict {
    match command(payload) {
        b"CONNECTED" => Verdict::Match,
        b"ERROR" => error_frame(payload),
        _ => Verdict::Skip,
    }
}

pub(super) fn judge_receipt(payload: &[u8], seq: u32) -> Verdict {
    match command(payload) {
        b"RECEIPT" if header(payload, "receipt-id") == Some(seq.to_string().as_bytes()) => {
            Verdict::Match
        }
        b"ERROR" => error_frame(payload),
        _ => Verdict::Skip,
    }
}

pub(super) fn goodbye() -> Message {
    Message::Text("DISCONNECT\n\n\0".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_judged_by_command_and_header() {
        let connected = b"CONNECTED\nsession:x\nversion:1.1\n\n\0";
        assert_eq!(judge_connected(connected), Verdict::Match);
        assert_eq!(judge_connected(b"\n"), Verdict::Skip);
        assert_eq!(
            judge_connected(b"ERROR\nmessage:Bad login\n\nbody\0"),
            Verdict::Refused("STOMP ERROR: Bad login".into())
        );
        assert_eq!(
            judge_receipt(b"RECEIPT\nreceipt-id:3\n\n\0", 3),
            Verdict::Match
        );
        assert_eq!(
            judge_receipt(b"RECEIPT\nreceipt-id:3\n\n\0", 4),
            Verdict::Skip
        );
    }
}
