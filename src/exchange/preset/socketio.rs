//! Socket.IO v4 (Engine.IO protocol 4) over the websocket transport alone.
//!
//! The server greets with an Engine.IO `open` packet (`0{...}`); the
//! client connects to a namespace with `40` and gets `40{"sid":...}` back.
//! That connect is what can be timed without app code, and it happens once
//! per socket. The server pings (`2`); the client must answer `3`.

use super::{refused, Options, Plan, Reply};
use crate::exchange::{Message, Verdict};

pub(super) fn plan(options: &mut Options) -> Plan {
    let namespace = options.string("namespace").unwrap_or_else(|| "/".into());
    if !namespace.starts_with('/') || namespace.contains(',') {
        options.error(
            "namespace",
            "must start with '/' and have no ','".to_owned(),
        );
    }
    let connect = format!("40{}", prefix(&namespace));
    let mut plan = Plan::new(Message::Text(connect), Reply::SocketIoConnect)
        .step(None, Some(Reply::SocketIoOpen));
    plan.query = vec![("EIO", "4"), ("transport", "websocket")];
    plan.single = Some("a namespace is connected once per socket");
    plan
}

/// `/admin,` for a namespace; nothing for the main one.
fn prefix(namespace: &str) -> String {
    if namespace == "/" {
        String::new()
    } else {
        format!("{namespace},")
    }
}

/// The Engine.IO open packet.
pub(super) fn judge_open(payload: &[u8]) -> Verdict {
    if payload.starts_with(b"0{") {
        Verdict::Match
    } else {
        Verdict::Skip
    }
}

/// CONNECT's answer: `40[/ns,]{...}`; `44` (CONNECT_ERROR) refuses.
pub(super) fn judge_connect(payload: &[u8]) -> Verdict {
    let Some(rest) = payload.strip_prefix(b"4") else {
        return Verdict::Skip;
    };
    match rest.first() {
        Some(b'0') if rest.contains(&b'{') => Verdict::Match,
        Some(b'4') => refused("CONNECT_ERROR", &String::from_utf8_lossy(&rest[1..])),
        _ => Verdict::Skip,
    }
}

/// The server's ping `2` is answered `3` (v4 reversed the direction).
pub(super) fn answer(payload: &[u8]) -> Option<Message> {
    (payload == b"2").then(|| Message::Text("3".to_owned()))
}

/// Engine.IO `close`: the session ends on the server's side at once.
pub(super) fn goodbye() -> Message {
    Message::Text("1".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_connect_and_refusal() {
        assert_eq!(judge_open(br#"0{"sid":"x"}"#), Verdict::Match);
        assert_eq!(judge_open(b"2"), Verdict::Skip);
        assert_eq!(judge_connect(br#"40{"sid":"x"}"#), Verdict::Match);
        assert_eq!(judge_connect(br#"40/admin,{"sid":"x"}"#), Verdict::Match);
        assert!(matches!(
            judge_connect(br#"44{"message":"Not authorized"}"#),
            Verdict::Refused(m) if m.contains("Not authorized")
        ));
        assert_eq!(answer(b"2"), Some(Message::Text("3".into())));
    }
}
