//! The fields that say what a run sends after the open: binary messages,
//! `prelude`, `samples` and `preset`.

use serde_json::{Map, Value};

use super::{Fields, Loader};
use crate::exchange::prelude::{step_name, MAX_STEPS};
use crate::exchange::preset::{self, Context, Kind, Options, Plan};
use crate::exchange::{Expect, Message, Step};

impl Loader<'_> {
    /// A configured message: a string is text, `{"hex"}`/`{"base64"}` binary.
    /// `expand` applies `${NAME}` to text (prelude messages, as headers).
    pub(super) fn message(
        &mut self,
        place: &str,
        field: &str,
        value: &Value,
        expand: bool,
    ) -> Option<Message> {
        match Message::from_config(value) {
            Ok(Message::Text(raw)) if expand => {
                self.substitute(place, field, &raw).map(Message::Text)
            }
            Ok(message) => Some(message),
            Err(message) => {
                self.error(place, field, message);
                None
            }
        }
    }

    /// `prelude`: at most `MAX_STEPS` steps of `send`, `expect`, or both.
    pub(super) fn prelude(&mut self, place: &str, value: &Value) -> Option<Vec<Step>> {
        let Some(items) = value.as_array() else {
            self.error(
                place,
                "prelude",
                "must be an array of steps like {\"send\": ...} or {\"expect\": ...}",
            );
            return None;
        };
        if items.len() > MAX_STEPS {
            self.error(
                place,
                "prelude",
                format!("has {} steps; at most {MAX_STEPS}", items.len()),
            );
        }
        let mut steps = Vec::with_capacity(items.len());
        let mut broken = false;
        for (index, item) in items.iter().enumerate() {
            let name = step_name(index);
            let Some(object) = item.as_object().filter(|o| !o.is_empty()) else {
                self.error(
                    place,
                    &name,
                    "must be an object with \"send\", \"expect\" or both",
                );
                broken = true;
                continue;
            };
            self.unknown_keys(place, &format!("{name}."), object, &["send", "expect"]);
            let send = object
                .get("send")
                .map(|v| self.message(place, &format!("{name}.send"), v, true));
            let expect = object
                .get("expect")
                .map(|v| self.message(place, &format!("{name}.expect"), v, true));
            if matches!(send, Some(None)) || matches!(expect, Some(None)) {
                broken = true;
                continue;
            }
            steps.push(Step {
                send: send.flatten(),
                expect: expect
                    .flatten()
                    .map(|m| Expect::Contains(m.bytes().to_vec())),
            });
        }
        (!broken).then_some(steps)
    }

    /// `preset`: a name, or `{"name": ..., options}`; the plan it makes.
    pub(super) fn preset(
        &mut self,
        place: &str,
        value: &Value,
        context: &Context,
    ) -> Option<(Kind, Plan)> {
        let empty = Map::new();
        let (name, options) = match value {
            Value::String(name) => (name.as_str(), &empty),
            Value::Object(object) => match object.get("name").and_then(Value::as_str) {
                Some(name) => (name, object),
                None => {
                    self.error(
                        place,
                        "preset.name",
                        "is missing: the preset's name, a string",
                    );
                    return None;
                }
            },
            other => {
                self.error(
                    place,
                    "preset",
                    format!("must be a preset's name or {{\"name\": ..., options}} (got {other})"),
                );
                return None;
            }
        };
        let Some(kind) = Kind::from_wire(name) else {
            let names: Vec<&str> = Kind::ALL.iter().map(|k| k.wire_name()).collect();
            let hint = super::suggest(name, &names).map(|s| format!("did you mean \"{s}\"?"));
            self.error_with_hint(
                place,
                "preset",
                format!(
                    "unknown preset {name:?}; presets (options): {}",
                    Kind::catalogue()
                ),
                hint,
            );
            return None;
        };
        let mut known = vec!["name"];
        known.extend_from_slice(kind.options());
        let before = self.errors.len();
        let takes = match kind.options() {
            [] => "no options".to_owned(),
            options => options.join(", "),
        };
        for key in options.keys().filter(|k| !known.contains(&k.as_str())) {
            let hint = super::suggest(key, &known).map(|s| format!("did you mean \"{s}\"?"));
            self.error_with_hint(
                place,
                &format!("preset.{key}"),
                format!("unknown option; {name} takes {takes}"),
                hint,
            );
        }
        let mut reader = Options::new(options, self.env);
        let plan = preset::plan(kind, &mut reader, context);
        for (option, message) in reader.errors {
            self.error(place, &format!("preset.{option}"), message);
        }
        (self.errors.len() == before).then_some((kind, plan))
    }

    /// Fields a preset sets itself, refused beside it.
    pub(super) fn preset_conflicts(
        &mut self,
        place: &str,
        own: &Fields,
        object: &Map<String, Value>,
        kind: Kind,
    ) {
        let name = kind.wire_name();
        for (set, field, what) in [
            (own.protocols.is_some(), "protocols", "its subprotocols"),
            (object.contains_key("prelude"), "prelude", "its prelude"),
            (
                own.send_message.is_some(),
                "send_message",
                "the measured message",
            ),
            (
                own.expect_message.is_some(),
                "expect_message",
                "the measured reply",
            ),
        ] {
            if set {
                self.error(
                    place,
                    field,
                    format!("cannot be set beside preset \"{name}\", which sets {what}"),
                );
            }
        }
    }
}
