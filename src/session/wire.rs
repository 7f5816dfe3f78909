//! The juggler wire: hat-compatible JSON text, segments, and messages.
//!
//! hat-juggler 0.7.6 sends `json.dumps(data)`: separators `", "` and `": "`,
//! every non-ASCII character as `\uXXXX` (UTF-16, so `😀` is
//! `\ud83d\ude00`), keys in insertion order. [`encode_value`] writes that
//! form (object keys come in the order of the [`Value`]'s map). Each
//! message goes out as one or more WebSocket text frames whose first
//! character is the segment type (`0` final, `1` more to come, `2` ping,
//! `3` pong); [`segments`] cuts a text into them on character boundaries and
//! [`Reassembler`] joins them back, bounded.

use std::io;

use serde_json::ser::Formatter;
use serde_json::{Map, Value};

use super::SessionError;

/// serde_json's compact form with Python's separators and ASCII escapes.
struct HatFormatter;

impl Formatter for HatFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if c.is_ascii() {
                continue;
            }
            w.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                write!(w, "\\u{u:04x}")?;
            }
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
}

/// `value` as hat-juggler's encoder writes it (see the module docs).
pub fn encode_value(value: &Value) -> String {
    let mut out = Vec::with_capacity(64);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, HatFormatter);
    serde::Serialize::serialize(value, &mut ser).expect("a JSON value serialises into memory");
    String::from_utf8(out).expect("the hat formatter writes ASCII")
}

/// A juggler message (see docs/protocol.md).
#[derive(Debug, Clone, PartialEq)]
pub enum JugglerMessage {
    /// client → server: call `name` with `data`; `id` counts from 1.
    Request {
        /// Per connection, 1, 2, 3, …
        id: i64,
        /// What to do; `""` is answered by the session itself with `data`.
        name: String,
        /// Any JSON.
        data: Value,
    },
    /// server → client: the answer to request `id`.
    Response {
        /// The request's id.
        id: i64,
        /// The result, or the error text when `success` is false.
        data: Value,
        /// Whether the request succeeded.
        success: bool,
    },
    /// server → client: JSON Patch operations to apply to the client's state.
    State {
        /// An RFC 6902 patch (an array of operations).
        diff: Value,
    },
    /// server → client: an event.
    Notify {
        /// Its name.
        name: String,
        /// Any JSON.
        data: Value,
    },
}

impl JugglerMessage {
    /// The message as hat writes it, keys in hat's order.
    pub fn encode(&self) -> String {
        let s = |v: &str| encode_value(&Value::String(v.to_owned()));
        match self {
            JugglerMessage::Request { id, name, data } => format!(
                "{{\"type\": \"request\", \"id\": {id}, \"name\": {}, \"data\": {}}}",
                s(name),
                encode_value(data)
            ),
            JugglerMessage::Response { id, data, success } => format!(
                "{{\"type\": \"response\", \"id\": {id}, \"data\": {}, \"success\": {success}}}",
                encode_value(data)
            ),
            JugglerMessage::State { diff } => {
                format!("{{\"type\": \"state\", \"diff\": {}}}", encode_value(diff))
            }
            JugglerMessage::Notify { name, data } => format!(
                "{{\"type\": \"notify\", \"name\": {}, \"data\": {}}}",
                s(name),
                encode_value(data)
            ),
        }
    }

    /// Parses a message that a peer in role `from` may send (a client sends
    /// requests only; a server responses, states and notifies).
    pub fn decode(text: &str, from_server: bool) -> Result<JugglerMessage, SessionError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| SessionError::InvalidJson(e.to_string()))?;
        let Value::Object(mut m) = value else {
            return Err(SessionError::BadMessage(
                "a message must be a JSON object".into(),
            ));
        };
        let kind = match m.get("type") {
            Some(Value::String(t)) => t.clone(),
            _ => {
                return Err(SessionError::BadMessage(
                    "a message needs a string `type`".into(),
                ))
            }
        };
        let sender = if from_server { "server" } else { "client" };
        let allowed = if from_server {
            ["response", "state", "notify"].contains(&kind.as_str())
        } else {
            kind == "request"
        };
        if !allowed {
            return Err(SessionError::NotAllowed { kind, sender });
        }
        let data = m.remove("data").unwrap_or(Value::Null);
        Ok(match kind.as_str() {
            "request" => JugglerMessage::Request {
                id: id(&m)?,
                name: string(&m, "name")?,
                data,
            },
            "response" => JugglerMessage::Response {
                id: id(&m)?,
                data,
                success: match m.get("success") {
                    Some(Value::Bool(b)) => *b,
                    _ => {
                        return Err(SessionError::BadMessage(
                            "a response needs a boolean `success`".into(),
                        ))
                    }
                },
            },
            "state" => JugglerMessage::State {
                diff: m.remove("diff").unwrap_or(Value::Null),
            },
            _ => JugglerMessage::Notify {
                name: string(&m, "name")?,
                data,
            },
        })
    }
}

fn id(m: &Map<String, Value>) -> Result<i64, SessionError> {
    m.get("id").and_then(Value::as_i64).ok_or_else(|| {
        SessionError::BadMessage(format!(
            "`id` must be an integer, not {}",
            m.get("id").map_or("missing".into(), encode_value)
        ))
    })
}

fn string(m: &Map<String, Value>, key: &str) -> Result<String, SessionError> {
    match m.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(SessionError::BadMessage(format!(
            "`{key}` must be a string"
        ))),
    }
}

/// `text` as juggler segments of at most `max` characters each (`1…` for
/// every slice but the last, `0…` for the last; one `0` frame if it fits).
pub fn segments(text: &str, max: usize) -> Vec<String> {
    let max = max.max(1);
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        // The byte index after `max` characters, or the end.
        let cut = rest.char_indices().nth(max).map_or(rest.len(), |(i, _)| i);
        let (slice, tail) = rest.split_at(cut);
        if tail.is_empty() {
            out.push(format!("0{slice}"));
            return out;
        }
        out.push(format!("1{slice}"));
        rest = tail;
    }
}

/// What one frame brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A whole message's JSON text.
    Message(String),
    /// A keep-alive ping and its data (answer `'3' + data`).
    Ping(String),
    /// A keep-alive pong.
    Pong,
    /// Part of a message; more to come.
    Partial,
}

/// Joins segments back into messages; an unfinished message may not grow
/// past `max` bytes.
#[derive(Debug)]
pub struct Reassembler {
    parts: String,
    max: usize,
}

impl Reassembler {
    /// A reassembler for messages of at most `max` bytes.
    pub fn new(max: usize) -> Reassembler {
        Reassembler {
            parts: String::new(),
            max,
        }
    }

    /// Takes one text frame.
    pub fn push(&mut self, frame: &str) -> Result<Segment, SessionError> {
        let mut chars = frame.chars();
        let kind = chars.next().ok_or(SessionError::EmptyFrame)?;
        let data = chars.as_str();
        match kind {
            '0' | '1' => {
                let size = self.parts.len() + data.len();
                if size > self.max {
                    self.parts = String::new();
                    return Err(SessionError::TooLarge {
                        size,
                        max: self.max,
                    });
                }
                self.parts.push_str(data);
                if kind == '1' {
                    return Ok(Segment::Partial);
                }
                Ok(Segment::Message(std::mem::take(&mut self.parts)))
            }
            '2' => Ok(Segment::Ping(data.to_owned())),
            '3' => Ok(Segment::Pong),
            other => Err(SessionError::UnknownSegment(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_encode_as_hat_does() {
        assert_eq!(
            encode_value(&json!({"a": [1, 2.5, null], "b": {"c": true}})),
            r#"{"a": [1, 2.5, null], "b": {"c": true}}"#
        );
        assert_eq!(
            encode_value(&json!("é 😀 \n\u{1}")),
            r#""\u00e9 \ud83d\ude00 \n\u0001""#
        );
    }

    #[test]
    fn messages_encode_byte_for_byte_as_captured() {
        let data = json!({"i": 0, "text": "message 0", "list": [0, 0], "nested": {"none": null, "ok": true}});
        // (serde_json's map sorts keys: the captured `nested` is {"ok", "none"}.)
        assert_eq!(
            JugglerMessage::Response {
                id: 7,
                data: json!("requested failure: boom"),
                success: false
            }
            .encode(),
            r#"{"type": "response", "id": 7, "data": "requested failure: boom", "success": false}"#
        );
        assert_eq!(
            JugglerMessage::Notify {
                name: "custom".into(),
                data: json!({"k": [1, "v"]})
            }
            .encode(),
            r#"{"type": "notify", "name": "custom", "data": {"k": [1, "v"]}}"#
        );
        let req = JugglerMessage::Request {
            id: 6,
            name: String::new(),
            data: json!({"x": [1, 2, 3]}),
        };
        assert_eq!(
            req.encode(),
            r#"{"type": "request", "id": 6, "name": "", "data": {"x": [1, 2, 3]}}"#
        );
        assert_eq!(JugglerMessage::decode(&req.encode(), false).unwrap(), req);
        let r = JugglerMessage::Response {
            id: 1,
            data,
            success: true,
        };
        assert_eq!(JugglerMessage::decode(&r.encode(), true).unwrap(), r);
    }

    #[test]
    fn bad_messages_are_named() {
        let e = |t: &str, from_server| {
            JugglerMessage::decode(t, from_server)
                .unwrap_err()
                .to_string()
        };
        assert!(e("{", false).contains("invalid JSON"));
        assert!(e("[1]", false).contains("JSON object"));
        assert!(
            e(r#"{"type": "state", "diff": []}"#, false).contains("a client may not send `state`")
        );
        assert!(e(r#"{"type": "request", "id": 1, "name": "x"}"#, true)
            .contains("a server may not send `request`"));
        assert!(e(r#"{"type": "request", "id": "1", "name": "x"}"#, false)
            .contains("`id` must be an integer, not \"1\""));
        assert!(e(r#"{"type": "request", "id": 1.5, "name": "x"}"#, false).contains("integer"));
    }

    #[test]
    fn segments_cut_on_characters_and_join_back() {
        assert_eq!(segments("", 3), vec!["0"]);
        assert_eq!(segments("abc", 3), vec!["0abc"]);
        assert_eq!(segments("abcd", 3), vec!["1abc", "0d"]);
        assert_eq!(segments("éé😀x", 2), vec!["1éé", "0😀x"]);
        // The capture: a 5000-char echo at 1024 is four `1` frames and a `0`.
        let text = "x".repeat(5000);
        let segs = segments(&text, 1024);
        assert_eq!(segs.iter().map(|s| &s[..1]).collect::<String>(), "11110");
        assert!(segs[..4].iter().all(|s| s.len() == 1025));
        let mut r = Reassembler::new(1 << 20);
        let mut got = None;
        for s in &segs {
            if let Segment::Message(m) = r.push(s).unwrap() {
                got = Some(m);
            }
        }
        assert_eq!(got.as_deref(), Some(text.as_str()));
    }

    #[test]
    fn the_reassembler_refuses_what_it_must() {
        let mut r = Reassembler::new(4);
        assert_eq!(r.push("2").unwrap(), Segment::Ping(String::new()));
        assert_eq!(r.push("3x").unwrap(), Segment::Pong);
        assert!(matches!(r.push(""), Err(SessionError::EmptyFrame)));
        assert!(matches!(
            r.push("9"),
            Err(SessionError::UnknownSegment('9'))
        ));
        assert_eq!(r.push("1abc").unwrap(), Segment::Partial);
        assert!(matches!(
            r.push("1de"),
            Err(SessionError::TooLarge { size: 5, max: 4 })
        ));
    }
}
