//! GraphQL over WebSocket: `graphql-transport-ws` (the graphql-ws library,
//! the GraphQL-over-HTTP WG protocol) and legacy `graphql-ws` (Apollo's
//! subscriptions-transport-ws, which has no ping).

use serde_json::Value;

use super::{is_seq, json_object, kind_of, refused, Options, Plan, Reply};
use crate::exchange::{Message, Verdict};

const TRANSPORT_WS: &str = "graphql-transport-ws";
const LEGACY: &str = "graphql-ws";

/// `connection_init`, with the `payload` option (auth) when given.
fn init(options: &mut Options, legacy: bool) -> Message {
    let payload = match options.json("payload") {
        Some(payload @ Value::Object(_)) => Some(payload),
        Some(other) => {
            options.error(
                "payload",
                format!("must be a JSON object (got {})", kind_of(&other)),
            );
            None
        }
        // The legacy server reads `payload` unconditionally.
        None if legacy => Some(Value::Object(Default::default())),
        None => None,
    };
    Message::Text(match payload {
        Some(payload) => format!("{{\"type\":\"connection_init\",\"payload\":{payload}}}"),
        None => "{\"type\":\"connection_init\"}".to_owned(),
    })
}

pub(super) fn plan_transport_ws(options: &mut Options) -> Plan {
    let init = init(options, false);
    // The server echoes a ping's payload: the sample's number tells a late
    // pong from the current one.
    let ping = Message::Text("{\"type\":\"ping\",\"payload\":{\"seq\":${SEQ}}}".to_owned());
    let mut plan = Plan::new(ping, Reply::GraphqlPong).step(Some(init), Some(Reply::GraphqlAck));
    plan.protocols = vec![TRANSPORT_WS.to_owned()];
    plan
}

pub(super) fn plan_legacy(options: &mut Options) -> Plan {
    let init = init(options, true);
    let query = match options.string("query") {
        Some(q) => q,
        None => "{__typename}".to_owned(),
    };
    let query = Value::String(query);
    let start =
        format!("{{\"id\":\"${{SEQ}}\",\"type\":\"start\",\"payload\":{{\"query\":{query}}}}}");
    let mut plan = Plan::new(Message::Text(start), Reply::GraphqlData)
        .step(Some(init), Some(Reply::GraphqlAck));
    plan.after = Some(Message::Text(
        "{\"id\":\"${SEQ}\",\"type\":\"stop\"}".to_owned(),
    ));
    plan.protocols = vec![LEGACY.to_owned()];
    plan
}

/// `connection_ack`; a legacy `connection_error` is a refusal.
pub(super) fn judge_ack(payload: &[u8]) -> Verdict {
    let Some(object) = json_object(payload) else {
        return Verdict::Skip;
    };
    match object.get("type").and_then(Value::as_str) {
        Some("connection_ack") => Verdict::Match,
        Some("connection_error") => refused("connection_error", &error_text(object.get("payload"))),
        _ => Verdict::Skip,
    }
}

/// A pong whose payload, if it has a `seq`, is this sample's.
pub(super) fn judge_pong(payload: &[u8], seq: u32) -> Verdict {
    let Some(object) = json_object(payload) else {
        return Verdict::Skip;
    };
    if object.get("type").and_then(Value::as_str) != Some("pong") {
        return Verdict::Skip;
    }
    match object.get("payload").and_then(|p| p.get("seq")) {
        Some(id) if !is_seq(Some(id), seq) => Verdict::Skip,
        _ => Verdict::Match,
    }
}

/// The legacy `data` for this sample's `start`; an `error` for it refuses.
pub(super) fn judge_data(payload: &[u8], seq: u32) -> Verdict {
    let Some(object) = json_object(payload) else {
        return Verdict::Skip;
    };
    if !is_seq(object.get("id"), seq) {
        return Verdict::Skip;
    }
    let payload = object.get("payload");
    match object.get("type").and_then(Value::as_str) {
        Some("data") => match payload.and_then(|p| p.get("errors")) {
            Some(errors) if !errors.is_null() => {
                refused("GraphQL errors", &error_text(Some(errors)))
            }
            _ => Verdict::Match,
        },
        Some("error") => refused("GraphQL error", &error_text(payload)),
        _ => Verdict::Skip,
    }
}

/// The `message` of an error payload, or the payload itself.
fn error_text(payload: Option<&Value>) -> String {
    let first = match payload {
        Some(Value::Array(items)) => items.first(),
        other => other,
    };
    match first {
        Some(p) => match p.get("message").and_then(Value::as_str) {
            Some(message) => message.to_owned(),
            None => p.to_string(),
        },
        None => "no payload".to_owned(),
    }
}

/// graphql-transport-ws: a server ping must be answered with a pong.
pub(super) fn answer(payload: &[u8]) -> Option<Message> {
    let object = json_object(payload)?;
    (object.get("type").and_then(Value::as_str) == Some("ping"))
        .then(|| Message::Text("{\"type\":\"pong\"}".to_owned()))
}

pub(super) fn legacy_goodbye() -> Message {
    Message::Text("{\"type\":\"connection_terminate\"}".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_judged_by_type_and_id() {
        assert_eq!(judge_ack(br#"{"type":"connection_ack"}"#), Verdict::Match);
        assert_eq!(judge_ack(br#"{"type":"ka"}"#), Verdict::Skip);
        assert_eq!(
            judge_ack(br#"{"type":"connection_error","payload":{"message":"no"}}"#),
            Verdict::Refused("connection_error: no".into())
        );
        assert_eq!(
            judge_pong(br#"{"type":"pong","payload":{"seq":2}}"#, 2),
            Verdict::Match
        );
        assert_eq!(
            judge_pong(br#"{"type":"pong","payload":{"seq":1}}"#, 2),
            Verdict::Skip
        );
        assert_eq!(judge_pong(br#"{"type":"pong"}"#, 2), Verdict::Match);
        let data = br#"{"type":"data","id":"3","payload":{"data":{"__typename":"Query"}}}"#;
        assert_eq!(judge_data(data, 3), Verdict::Match);
        assert_eq!(judge_data(data, 4), Verdict::Skip);
        assert!(answer(br#"{"type":"ping"}"#).is_some());
        assert!(answer(br#"{"type":"pong"}"#).is_none());
    }
}
