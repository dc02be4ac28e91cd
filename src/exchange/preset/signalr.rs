//! ASP.NET Core SignalR, JSON hub protocol: records end with 0x1E. The
//! handshake `{"protocol":"json","version":1}` is answered `{}` (or
//! `{"error":...}`); it is the measured exchange unless the `invoke` option
//! names a hub method, whose completion is timed instead.

use serde_json::{Map, Value};

use super::{is_seq, json_object, kind_of, refused, Options, Plan, Reply};
use crate::exchange::{Message, Verdict};

const SEPARATOR: u8 = 0x1e;

pub(super) fn plan(options: &mut Options) -> Plan {
    let handshake = Message::Text("{\"protocol\":\"json\",\"version\":1}\u{1e}".to_owned());
    let arguments = match options.json("arguments") {
        None => Value::Array(Vec::new()),
        Some(arguments @ Value::Array(_)) => arguments,
        Some(other) => {
            options.error(
                "arguments",
                format!("must be a JSON array (got {})", kind_of(&other)),
            );
            Value::Array(Vec::new())
        }
    };
    let Some(target) = options.string("invoke") else {
        if options.value("arguments").is_some() {
            options.error("arguments", "is only used with invoke");
        }
        let mut plan = Plan::new(handshake, Reply::SignalrHandshake);
        plan.single = Some(
            "the handshake happens once per connection; set the invoke option to time a hub \
             method instead",
        );
        return plan;
    };
    let invocation = format!(
        "{{\"type\":1,\"invocationId\":\"${{SEQ}}\",\"target\":{},\"arguments\":{arguments}}}\u{1e}",
        Value::String(target)
    );
    Plan::new(Message::Text(invocation), Reply::SignalrCompletion)
        .step(Some(handshake), Some(Reply::SignalrHandshake))
}

/// The JSON records in a frame (several may share one).
fn records(payload: &[u8]) -> impl Iterator<Item = Map<String, Value>> + '_ {
    payload.split(|b| *b == SEPARATOR).filter_map(json_object)
}

/// The handshake response: an object without `type`; `error` refuses.
pub(super) fn judge_handshake(payload: &[u8]) -> Verdict {
    for record in records(payload) {
        if record.contains_key("type") {
            continue;
        }
        return match record.get("error") {
            Some(error) => refused("handshake error", error.as_str().unwrap_or("?")),
            None => Verdict::Match,
        };
    }
    Verdict::Skip
}

/// A Completion (type 3) for this sample's invocation id.
pub(super) fn judge_completion(payload: &[u8], seq: u32) -> Verdict {
    for record in records(payload) {
        if record.get("type").and_then(Value::as_u64) != Some(3)
            || !is_seq(record.get("invocationId"), seq)
        {
            continue;
        }
        return match record.get("error") {
            Some(error) => refused("hub error", error.as_str().unwrap_or("?")),
            None => Verdict::Match,
        };
    }
    Verdict::Skip
}

/// A Close message (type 7) from the client.
pub(super) fn goodbye() -> Message {
    Message::Text("{\"type\":7}\u{1e}".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_and_completion() {
        assert_eq!(judge_handshake(b"{}\x1e"), Verdict::Match);
        assert_eq!(judge_handshake(b"{\"type\":6}\x1e"), Verdict::Skip);
        assert!(matches!(
            judge_handshake(b"{\"error\":\"nope\"}\x1e"),
            Verdict::Refused(m) if m.contains("nope")
        ));
        let done = b"{\"type\":6}\x1e{\"type\":3,\"invocationId\":\"4\",\"result\":\"hi\"}\x1e";
        assert_eq!(judge_completion(done, 4), Verdict::Match);
        assert_eq!(judge_completion(done, 5), Verdict::Skip);
    }
}
