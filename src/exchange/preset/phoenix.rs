//! Phoenix Channels, V2 JSON serializer (`vsn=2.0.0`): the socket-level
//! heartbeat `[null,ref,"phoenix","heartbeat",{}]` is answered with a
//! `phx_reply` of status ok, with no channel or app code involved.

use serde_json::Value;

use super::{is_seq, json, refused, Plan, Reply};
use crate::exchange::{Message, Verdict};

pub(super) fn plan() -> Plan {
    let heartbeat = Message::Text("[null,\"${SEQ}\",\"phoenix\",\"heartbeat\",{}]".to_owned());
    let mut plan = Plan::new(heartbeat, Reply::PhoenixReply);
    plan.query = vec![("vsn", "2.0.0")];
    plan
}

/// `[join_ref, ref, "phoenix", "phx_reply", {"status": ..., "response": ...}]`.
pub(super) fn judge_reply(payload: &[u8], seq: u32) -> Verdict {
    let Some(Value::Array(items)) = json(payload) else {
        return Verdict::Skip;
    };
    let [_, reference, topic, event, body] = items.as_slice() else {
        return Verdict::Skip;
    };
    if topic != "phoenix" || event != "phx_reply" || !is_seq(Some(reference), seq) {
        return Verdict::Skip;
    }
    match body.get("status").and_then(Value::as_str) {
        Some("ok") => Verdict::Match,
        _ => refused("phx_reply", &body.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_reply_by_ref_and_status() {
        let ok = br#"[null,"2","phoenix","phx_reply",{"response":{},"status":"ok"}]"#;
        assert_eq!(judge_reply(ok, 2), Verdict::Match);
        assert_eq!(judge_reply(ok, 3), Verdict::Skip);
        let bad = br#"[null,"2","phoenix","phx_reply",{"response":{},"status":"error"}]"#;
        assert!(matches!(judge_reply(bad, 2), Verdict::Refused(_)));
    }
}
