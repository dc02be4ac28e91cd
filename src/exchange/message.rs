//! A configured message: text or binary bytes, with `${SEQ}` filled in per
//! sample.
//!
//! In a config a JSON string is text; `{"hex": "c000"}` or
//! `{"base64": "wAA="}` is binary. Replies are matched as bytes, so a text
//! expectation matches a binary reply that holds the same bytes (some
//! servers answer JSON in binary frames).

use std::borrow::Cow;

use serde_json::Value;

/// The placeholder a measured message carries for the sample's number.
pub const SEQ: &[u8] = b"${SEQ}";

/// One message to send or bytes to look for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Text(String),
    Binary(Vec<u8>),
}

impl Message {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(bytes) => bytes,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.bytes().is_empty()
    }

    /// Parses a configured message; the error says what the value must be.
    pub fn from_config(value: &Value) -> Result<Message, String> {
        let object = match value {
            Value::String(text) => return Ok(Message::Text(text.clone())),
            Value::Object(object) => object,
            other => {
                return Err(format!(
                    "must be a string (text) or {{\"hex\": ...}} / {{\"base64\": ...}} \
                     (binary) (got {other})"
                ))
            }
        };
        let mut keys = object.keys();
        let (Some(key), None) = (keys.next(), keys.next()) else {
            return Err("a binary message has exactly one key, \"hex\" or \"base64\"".into());
        };
        let Some(encoded) = object[key].as_str() else {
            return Err(format!("\"{key}\" must be a string"));
        };
        match key.as_str() {
            "hex" => decode_hex(encoded).map(Message::Binary),
            "base64" => decode_base64(encoded).map(Message::Binary),
            _ => Err(format!(
                "unknown key \"{key}\"; a binary message is {{\"hex\": ...}} or {{\"base64\": ...}}"
            )),
        }
    }

    /// The message with every `${SEQ}` replaced by `seq`; borrowed when it
    /// has none, so a plain message costs no copy per sample.
    pub fn render(&self, seq: u32) -> Cow<'_, Message> {
        match (self, fill_seq(self.bytes(), seq)) {
            (_, Cow::Borrowed(_)) => Cow::Borrowed(self),
            // Digits in place of ASCII keep UTF-8 valid; lossy only in name.
            (Message::Text(_), Cow::Owned(bytes)) => {
                Cow::Owned(Message::Text(String::from_utf8_lossy(&bytes).into_owned()))
            }
            (Message::Binary(_), Cow::Owned(bytes)) => Cow::Owned(Message::Binary(bytes)),
        }
    }
}

/// `bytes` with every `${SEQ}` replaced by the decimal `seq`.
pub fn fill_seq(bytes: &[u8], seq: u32) -> Cow<'_, [u8]> {
    let finder = memchr::memmem::Finder::new(SEQ);
    if finder.find(bytes).is_none() {
        return Cow::Borrowed(bytes);
    }
    let digits = seq.to_string();
    let mut out = Vec::with_capacity(bytes.len() + digits.len());
    let mut rest = bytes;
    while let Some(at) = finder.find(rest) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(digits.as_bytes());
        rest = &rest[at + SEQ.len()..];
    }
    out.extend_from_slice(rest);
    Cow::Owned(out)
}

/// Hex digits, either case, optionally separated by spaces or colons.
pub fn decode_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text.bytes().filter(|b| !matches!(b, b' ' | b':')).collect();
    if digits.len() % 2 != 0 {
        return Err(format!(
            "hex {text:?} has an odd number of digits ({})",
            digits.len()
        ));
    }
    digits
        .chunks(2)
        .map(|pair| {
            let nibble = |b: u8| (b as char).to_digit(16);
            match (nibble(pair[0]), nibble(pair[1])) {
                (Some(high), Some(low)) => Ok((high * 16 + low) as u8),
                _ => Err(format!(
                    "hex {text:?} has a character that is not a hex digit ({:?})",
                    String::from_utf8_lossy(pair)
                )),
            }
        })
        .collect()
}

/// Standard base64 (RFC 4648 section 4), padding optional.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    let trimmed = text.trim_end_matches('=');
    if text.len() - trimmed.len() > 2 {
        return Err(format!("base64 {text:?} has more than two '=' at the end"));
    }
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in trimmed.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => {
                return Err(format!(
                    "base64 {text:?} has a character outside the standard alphabet ({:?})",
                    c as char
                ))
            }
        };
        acc = acc << 6 | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits >= 6 {
        return Err(format!("base64 {text:?} has a length no encoding gives"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_string_is_text_and_an_object_is_binary() {
        assert_eq!(
            Message::from_config(&json!("hi")),
            Ok(Message::Text("hi".into()))
        );
        assert_eq!(
            Message::from_config(&json!({"hex": "C0 00"})),
            Ok(Message::Binary(vec![0xc0, 0]))
        );
        assert_eq!(
            Message::from_config(&json!({"base64": "wAA="})),
            Ok(Message::Binary(vec![0xc0, 0]))
        );
        for bad in [
            json!({"hex": "c0g0"}),
            json!({"hex": "c00"}),
            json!({"base64": "w!A="}),
            json!({"hex": "c0", "base64": "wA=="}),
            json!({"bin": "c0"}),
            json!(3),
        ] {
            assert!(Message::from_config(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn base64_decodes_what_the_encoder_makes() {
        // The encoder is checked against RFC 4648's vectors in probe::ws.
        for len in 0..=7 {
            let plain: Vec<u8> = (0..len).map(|i| (i * 89 + 250) as u8).collect();
            let encoded = crate::probe::ws::base64(&plain);
            assert_eq!(decode_base64(&encoded).as_deref(), Ok(&plain[..]));
            let unpadded = encoded.trim_end_matches('=');
            assert_eq!(decode_base64(unpadded).as_deref(), Ok(&plain[..]));
        }
        assert!(decode_base64("Z").is_err());
        assert!(decode_base64("Zg===").is_err());
    }

    #[test]
    fn seq_is_filled_in_text_and_bytes() {
        let message = Message::Text("{\"id\":${SEQ},\"n\":\"${SEQ}\"}".into());
        assert_eq!(
            *message.render(7),
            Message::Text("{\"id\":7,\"n\":\"7\"}".into())
        );
        assert!(matches!(
            Message::Text("x".into()).render(1),
            Cow::Borrowed(_)
        ));
        assert_eq!(&*fill_seq(b"plain", 3), b"plain");
    }
}
