//! Presets: what a probe says to speak a known application protocol far
//! enough to time a real request and reply.
//!
//! Each protocol's file holds its data (messages, subprotocols, options)
//! and its small driver (how to judge a reply, the keepalive to answer,
//! the goodbye). `plan` turns a name and options into the prelude and
//! measured exchange the probe runs; `config` applies it.

mod graphql;
mod jsonrpc;
mod mqtt;
mod phoenix;
mod signalr;
mod socketio;
mod stomp;

use serde_json::{Map, Value};

use super::{Expect, Message, Step, Verdict};
use crate::config::Env;

/// The protocols a preset can speak. Wire names live in `wire_name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    GraphqlTransportWs,
    GraphqlWs,
    SocketIo,
    Mqtt,
    Stomp,
    Phoenix,
    Signalr,
    JsonRpc,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::GraphqlTransportWs,
        Kind::GraphqlWs,
        Kind::SocketIo,
        Kind::Mqtt,
        Kind::Stomp,
        Kind::Phoenix,
        Kind::Signalr,
        Kind::JsonRpc,
    ];

    pub fn wire_name(self) -> &'static str {
        match self {
            Kind::GraphqlTransportWs => "graphql-transport-ws",
            Kind::GraphqlWs => "graphql-ws",
            Kind::SocketIo => "socket.io",
            Kind::Mqtt => "mqtt",
            Kind::Stomp => "stomp",
            Kind::Phoenix => "phoenix",
            Kind::Signalr => "signalr",
            Kind::JsonRpc => "json-rpc",
        }
    }

    pub fn from_wire(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.wire_name() == name)
    }

    /// The options the preset takes, for `check`'s errors.
    pub fn options(self) -> &'static [&'static str] {
        match self {
            Kind::GraphqlTransportWs => &["payload"],
            Kind::GraphqlWs => &["payload", "query"],
            Kind::SocketIo => &["namespace"],
            Kind::Mqtt => &["version", "client_id", "username", "password"],
            Kind::Stomp => &["host", "login", "passcode"],
            Kind::Phoenix => &[],
            Kind::Signalr => &["invoke", "arguments"],
            Kind::JsonRpc => &["method", "params"],
        }
    }

    /// Every preset with its options, as `check` lists them.
    pub fn catalogue() -> String {
        Kind::ALL
            .iter()
            .map(|k| match k.options() {
                [] => k.wire_name().to_owned(),
                options => format!("{} ({})", k.wire_name(), options.join(", ")),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The answer the protocol requires to a keepalive from the server.
    pub fn answer(self, payload: &[u8]) -> Option<Message> {
        match self {
            Kind::SocketIo => socketio::answer(payload),
            Kind::GraphqlTransportWs => graphql::answer(payload),
            _ => None,
        }
    }

    /// The protocol's own goodbye, sent before the Close.
    pub fn goodbye(self) -> Option<Message> {
        match self {
            Kind::GraphqlTransportWs | Kind::Phoenix | Kind::JsonRpc => None,
            Kind::GraphqlWs => Some(graphql::legacy_goodbye()),
            Kind::SocketIo => Some(socketio::goodbye()),
            Kind::Mqtt => Some(mqtt::goodbye()),
            Kind::Stomp => Some(stomp::goodbye()),
            Kind::Signalr => Some(signalr::goodbye()),
        }
    }
}

/// A reply a preset awaits, judged by its protocol's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    GraphqlAck,
    GraphqlPong,
    GraphqlData,
    SocketIoOpen,
    SocketIoConnect,
    MqttConnack,
    MqttPingresp,
    StompConnected,
    StompReceipt,
    PhoenixReply,
    SignalrHandshake,
    SignalrCompletion,
    JsonRpcResult,
}

impl Reply {
    /// Judges `payload` for sample `seq`.
    pub fn judge(self, payload: &[u8], seq: u32) -> Verdict {
        match self {
            Reply::GraphqlAck => graphql::judge_ack(payload),
            Reply::GraphqlPong => graphql::judge_pong(payload, seq),
            Reply::GraphqlData => graphql::judge_data(payload, seq),
            Reply::SocketIoOpen => socketio::judge_open(payload),
            Reply::SocketIoConnect => socketio::judge_connect(payload),
            Reply::MqttConnack => mqtt::judge_connack(payload),
            Reply::MqttPingresp => mqtt::judge_pingresp(payload),
            Reply::StompConnected => stomp::judge_connected(payload),
            Reply::StompReceipt => stomp::judge_receipt(payload, seq),
            Reply::PhoenixReply => phoenix::judge_reply(payload, seq),
            Reply::SignalrHandshake => signalr::judge_handshake(payload),
            Reply::SignalrCompletion => signalr::judge_completion(payload, seq),
            Reply::JsonRpcResult => jsonrpc::judge_result(payload, seq),
        }
    }
}

/// What a preset makes of a probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub protocols: Vec<String>,
    /// Query parameters added to the URL when it lacks them.
    pub query: Vec<(&'static str, &'static str)>,
    pub prelude: Vec<Step>,
    pub send: Message,
    pub expect: Reply,
    pub after: Option<Message>,
    /// Why the measured exchange cannot repeat on one socket, if it cannot.
    pub single: Option<&'static str>,
    /// The measured exchange ends the protocol session (no goodbye after).
    pub measured_ends_session: bool,
}

impl Plan {
    fn new(send: Message, expect: Reply) -> Self {
        Plan {
            protocols: Vec::new(),
            query: Vec::new(),
            prelude: Vec::new(),
            send,
            expect,
            after: None,
            single: None,
            measured_ends_session: false,
        }
    }

    fn step(mut self, send: Option<Message>, expect: Option<Reply>) -> Self {
        self.prelude.push(Step {
            send,
            expect: expect.map(Expect::Reply),
        });
        self
    }
}

/// What a preset may read besides its options.
pub struct Context<'a> {
    pub probe: &'a str,
    pub host: &'a str,
    pub env: Env<'a>,
}

/// A preset's options, read with their errors collected.
pub struct Options<'a> {
    map: &'a Map<String, Value>,
    env: Env<'a>,
    /// (option, message) pairs; the loader names the probe.
    pub errors: Vec<(String, String)>,
}

impl<'a> Options<'a> {
    pub fn new(map: &'a Map<String, Value>, env: Env<'a>) -> Self {
        Options {
            map,
            env,
            errors: Vec::new(),
        }
    }

    fn error(&mut self, option: &str, message: impl Into<String>) {
        self.errors.push((option.to_owned(), message.into()));
    }

    fn value(&self, option: &str) -> Option<&'a Value> {
        self.map.get(option)
    }

    /// A JSON option (a payload, params) with `${NAME}` expanded in every
    /// string inside it.
    fn json(&mut self, option: &str) -> Option<Value> {
        let value = self.map.get(option)?;
        Some(self.expand(option, value))
    }

    fn expand(&mut self, option: &str, value: &Value) -> Value {
        match value {
            Value::String(raw) => match crate::config::expand_env(raw, self.env) {
                Ok(s) => Value::String(s),
                Err(message) => {
                    self.error(option, message);
                    value.clone()
                }
            },
            Value::Array(items) => {
                Value::Array(items.iter().map(|v| self.expand(option, v)).collect())
            }
            Value::Object(object) => {
                // Inserted one by one: collecting would build the map
                // through a sort of its own, code the binary has no room for.
                let mut expanded = Map::new();
                for (key, item) in object {
                    expanded.insert(key.clone(), self.expand(option, item));
                }
                Value::Object(expanded)
            }
            other => other.clone(),
        }
    }

    /// A string option, `${NAME}` expanded.
    fn string(&mut self, option: &str) -> Option<String> {
        match self.map.get(option)? {
            Value::String(raw) => match crate::config::expand_env(raw, self.env) {
                Ok(s) => Some(s),
                Err(message) => {
                    self.error(option, message);
                    None
                }
            },
            other => {
                self.error(option, format!("must be a string (got {other})"));
                None
            }
        }
    }
}

/// The plan for preset `kind` with `options`, or the options' errors.
pub fn plan(kind: Kind, options: &mut Options, context: &Context) -> Plan {
    match kind {
        Kind::GraphqlTransportWs => graphql::plan_transport_ws(options),
        Kind::GraphqlWs => graphql::plan_legacy(options),
        Kind::SocketIo => socketio::plan(options),
        Kind::Mqtt => mqtt::plan(options, context),
        Kind::Stomp => stomp::plan(options, context),
        Kind::Phoenix => phoenix::plan(),
        Kind::Signalr => signalr::plan(options),
        Kind::JsonRpc => jsonrpc::plan(options),
    }
}

/// What kind of JSON value an option holds, for its error: never the
/// value itself, which `${NAME}` may have filled with a secret.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "true or false",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses `payload` as JSON, through the config's parser: one parser
/// instance in the binary, not one per input type (the size budget).
fn json(payload: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(payload).ok()?;
    crate::config::parse_json(text).ok()
}

/// Parses `payload` as a JSON object, if it is one.
fn json_object(payload: &[u8]) -> Option<Map<String, Value>> {
    match json(payload)? {
        Value::Object(object) => Some(object),
        _ => None,
    }
}

/// Whether a JSON id (number or string) is the sample's number.
fn is_seq(id: Option<&Value>, seq: u32) -> bool {
    match id {
        Some(Value::Number(n)) => n.as_u64() == Some(u64::from(seq)),
        Some(Value::String(s)) => s.parse::<u32>() == Ok(seq),
        _ => false,
    }
}

/// A server's error words, as `meta.error` shows them.
fn refused(what: &str, detail: &str) -> Verdict {
    Verdict::Refused(format!(
        "{what}: {}",
        crate::probe::clip(detail.trim(), 200)
    ))
}
