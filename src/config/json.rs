//! Config text to a `serde_json::Value`, refusing a key written twice.
//!
//! RFC 8259 leaves duplicate names to the parser, and serde_json's `Value`
//! keeps the last one without a word. In a config that hides a mistake: a
//! probe with `url` written twice probes one of them, and the operator
//! meant the other. So the tree is built here, and a repeated key is an
//! error at its line and column.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Parses `text`; a duplicate key fails like a syntax error, with its place.
pub fn parse(text: &str) -> serde_json::Result<Value> {
    serde_json::from_str::<Strict>(text).map(|strict| strict.0)
}

/// The message of a `parse` error without serde_json's trailing
/// "at line L column C" (the caller reports the place on its own).
pub fn message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    match text.strip_suffix(&suffix) {
        Some(bare) => bare.to_owned(),
        None => text,
    }
}

/// Whether a `parse` error is a repeated key rather than broken JSON.
pub fn is_duplicate_key(error: &serde_json::Error) -> bool {
    error.is_data()
}

struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        // JSON has no NaN or infinity; serde_json's own Value does the same.
        Ok(Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "the key {key:?} is written twice in one object"
                )));
            }
            let Strict(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_tree_as_serde_json_without_duplicates() {
        let text = r#"{"a": [1, -2, 3.5, "x", true, null, {}], "b": {"c": 18446744073709551615}}"#;
        let ours = parse(text).unwrap();
        let theirs: Value = serde_json::from_str(text).unwrap();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn a_repeated_key_is_an_error_at_its_place() {
        let text =
            "{\n  \"probes\": [\n    {\"url\": \"ws://a/\",\n     \"url\": \"ws://b/\"}\n  ]\n}";
        let error = parse(text).unwrap_err();
        assert!(is_duplicate_key(&error));
        assert_eq!(
            message(&error),
            "the key \"url\" is written twice in one object"
        );
        assert_eq!(error.line(), 4);
    }

    #[test]
    fn the_same_key_in_two_objects_is_fine() {
        assert!(parse(r#"[{"url": 1}, {"url": 2}, {"a": {"url": 3}, "url": 4}]"#).is_ok());
    }

    #[test]
    fn broken_json_is_not_called_a_duplicate() {
        let error = parse("{\"a\": }").unwrap_err();
        assert!(!is_duplicate_key(&error));
    }
}
