//! MQTT 3.1.1 and 5.0 over WebSocket (section 6 of both specs): subprotocol
//! `mqtt`, binary frames, CONNECT -> CONNACK, then PINGREQ -> PINGRESP.

use serde_json::Value;

use super::{Context, Options, Plan, Reply};
use crate::exchange::{Message, Verdict};

/// Seconds the broker may wait between our packets (1.5x this idle ends
/// the session); a probe's run is much shorter.
const KEEPALIVE_S: u16 = 60;
/// MQTT 3.1.1 servers must accept client ids of 1 to 23 bytes (3.1.3-5).
const CLIENT_ID_MAX: usize = 23;

pub(super) fn plan(options: &mut Options, context: &Context) -> Plan {
    let version = match options.value("version") {
        None => 4,
        Some(Value::Number(n)) if n.as_u64() == Some(4) || n.as_u64() == Some(5) => {
            n.as_u64().unwrap_or(4) as u8
        }
        Some(other) => {
            options.error(
                "version",
                format!("must be 4 (MQTT 3.1.1) or 5 (got {other})"),
            );
            4
        }
    };
    let client_id = options.string("client_id").unwrap_or_else(|| {
        let mut id = format!("wsprobe-{}", context.probe);
        id.truncate(CLIENT_ID_MAX);
        id
    });
    let username = options.string("username");
    let password = options.string("password");
    if password.is_some() && username.is_none() && version == 4 {
        options.error(
            "password",
            "MQTT 3.1.1 takes a password only with a username",
        );
    }
    let connect = connect(
        version,
        &client_id,
        username.as_deref(),
        password.as_deref(),
    );
    let mut plan = Plan::new(Message::Binary(vec![0xc0, 0x00]), Reply::MqttPingresp)
        .step(Some(Message::Binary(connect)), Some(Reply::MqttConnack));
    plan.protocols = vec!["mqtt".to_owned()];
    plan
}

/// A CONNECT packet: clean session, keepalive, client id, credentials.
fn connect(
    version: u8,
    client_id: &str,
    username: Option<&str>,
    password: Option<&str>,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(32);
    put_string(&mut body, b"MQTT");
    body.push(version);
    let mut flags = 0x02; // clean session / clean start
    if username.is_some() {
        flags |= 0x80;
    }
    if password.is_some() {
        flags |= 0x40;
    }
    body.push(flags);
    body.extend_from_slice(&KEEPALIVE_S.to_be_bytes());
    if version == 5 {
        body.push(0); // no properties
    }
    put_string(&mut body, client_id.as_bytes());
    for field in [username, password].into_iter().flatten() {
        put_string(&mut body, field.as_bytes());
    }
    let mut packet = vec![0x10];
    put_length(&mut packet, body.len());
    packet.extend_from_slice(&body);
    packet
}

/// A UTF-8 string or binary field: 2-byte length, then the bytes (cut to
/// 65535, which config-sized values never reach).
fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    let bytes = &bytes[..bytes.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The variable-length "remaining length" (section 2.2.3).
fn put_length(out: &mut Vec<u8>, mut length: usize) {
    loop {
        let mut byte = (length % 128) as u8;
        length /= 128;
        if length > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if length == 0 {
            return;
        }
    }
}

/// CONNACK: fixed header 0x20, remaining length, flags, then the return
/// code (3.1.1) or reason code (5). Anything but 0 is a refusal.
pub(super) fn judge_connack(payload: &[u8]) -> Verdict {
    if payload.first() != Some(&0x20) {
        return Verdict::Skip;
    }
    // Skip the remaining length (1 to 4 bytes), then the flags byte.
    let Some(length_bytes) = payload[1..].iter().take(4).position(|b| b & 0x80 == 0) else {
        return Verdict::Refused("CONNACK: malformed remaining length".into());
    };
    match payload.get(1 + length_bytes + 2) {
        Some(0) => Verdict::Match,
        Some(&code) => Verdict::Refused(format!("CONNACK refused: {code} ({})", meaning(code))),
        None => Verdict::Refused("CONNACK: too short".into()),
    }
}

/// The meaning of a CONNACK code: 3.1.1's 1 to 5, or 5.0's 0x80 and up.
fn meaning(code: u8) -> &'static str {
    match code {
        1 => "unacceptable protocol version",
        2 => "identifier rejected",
        3 => "server unavailable",
        4 => "bad user name or password",
        5 => "not authorized",
        0x80 => "unspecified error",
        0x81 => "malformed packet",
        0x82 => "protocol error",
        0x83 => "implementation specific error",
        0x84 => "unsupported protocol version",
        0x85 => "client identifier not valid",
        0x86 => "bad user name or password",
        0x87 => "not authorized",
        0x88 => "server unavailable",
        0x89 => "server busy",
        0x8a => "banned",
        0x8c => "bad authentication method",
        0x95 => "packet too large",
        0x97 => "quota exceeded",
        0x9c => "use another server",
        0x9d => "server moved",
        0x9f => "connection rate exceeded",
        _ => "unknown code",
    }
}

/// PINGRESP: `d0 00`.
pub(super) fn judge_pingresp(payload: &[u8]) -> Verdict {
    if payload.starts_with(&[0xd0, 0x00]) {
        Verdict::Match
    } else {
        Verdict::Skip
    }
}

/// DISCONNECT (normal disconnection in 5.0).
pub(super) fn goodbye() -> Message {
    Message::Binary(vec![0xe0, 0x00])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_packets_match_the_wire_notes() {
        let v4 = connect(4, "wsprobe", None, None);
        assert_eq!(
            v4,
            [0x10, 0x13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 0x3c, 0, 7]
                .iter()
                .chain(b"wsprobe")
                .copied()
                .collect::<Vec<u8>>()
        );
        let v5 = connect(5, "wsprobe", None, None);
        assert_eq!(&v5[..2], &[0x10, 0x14]);
        assert_eq!(v5[8], 5);
        let auth = connect(4, "c", Some("u"), Some("p"));
        assert_eq!(auth[9], 0xc2);
        assert!(auth.ends_with(&[0, 1, b'u', 0, 1, b'p']));
    }

    #[test]
    fn connack_codes_are_judged_in_both_versions() {
        assert_eq!(judge_connack(&[0x20, 2, 0, 0]), Verdict::Match);
        assert_eq!(
            judge_connack(&[0x20, 9, 0, 0, 6, 0x22, 0, 10, 0x21, 0, 20]),
            Verdict::Match
        );
        assert_eq!(
            judge_connack(&[0x20, 2, 0, 5]),
            Verdict::Refused("CONNACK refused: 5 (not authorized)".into())
        );
        assert!(
            matches!(judge_connack(&[0x20, 3, 0, 0x87, 0]), Verdict::Refused(m) if m.contains("not authorized"))
        );
        assert_eq!(judge_connack(&[0xd0, 0]), Verdict::Skip);
        assert_eq!(judge_pingresp(&[0xd0, 0]), Verdict::Match);
    }
}
