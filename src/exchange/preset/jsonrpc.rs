//! JSON-RPC 2.0 over WebSocket (Ethereum nodes and others): a request with
//! the sample's number as its id, answered by the reply with that id.

use serde_json::Value;

use super::{is_seq, json_object, kind_of, refused, Options, Plan, Reply};
use crate::exchange::{Message, Verdict};

pub(super) fn plan(options: &mut Options) -> Plan {
    let method = options
        .string("method")
        .unwrap_or_else(|| "web3_clientVersion".to_owned());
    let params = match options.json("params") {
        None => Value::Array(Vec::new()),
        Some(params @ (Value::Array(_) | Value::Object(_))) => params,
        Some(other) => {
            options.error(
                "params",
                format!("must be a JSON array or object (got {})", kind_of(&other)),
            );
            Value::Array(Vec::new())
        }
    };
    let request = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":${{SEQ}},\"method\":{},\"params\":{params}}}",
        Value::String(method)
    );
    Plan::new(Message::Text(request), Reply::JsonRpcResult)
}

/// The reply with this id: a `result` matches, an `error` refuses.
pub(super) fn judge_result(payload: &[u8], seq: u32) -> Verdict {
    let Some(object) = json_object(payload) else {
        return Verdict::Skip;
    };
    if !is_seq(object.get("id"), seq) {
        return Verdict::Skip;
    }
    if object.contains_key("result") {
        return Verdict::Match;
    }
    match object.get("error") {
        Some(error) => {
            let message = error.get("message").and_then(Value::as_str);
            refused("JSON-RPC error", message.unwrap_or(&error.to_string()))
        }
        None => Verdict::Skip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_by_id() {
        let ok = br#"{"jsonrpc":"2.0","id":1,"result":"anvil/v1.7.1"}"#;
        assert_eq!(judge_result(ok, 1), Verdict::Match);
        assert_eq!(judge_result(ok, 2), Verdict::Skip);
        let error =
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"Method not found"}}"#;
        assert_eq!(
            judge_result(error, 1),
            Verdict::Refused("JSON-RPC error: Method not found".into())
        );
    }
}
