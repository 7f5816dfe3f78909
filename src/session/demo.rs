//! The demo application of `plexwire session serve`: the example server of
//! hat-juggler's captured wire document, so that the real hat-juggler
//! client, a browser and plexwire's own tests all meet the same behaviour.
//!
//! Each connection starts with `{"counter": 0, "last": null, "items": [],
//! "tick": 0}`. Requests: `echo` sends notify `echoed` with the request's
//! data, adds one to `counter`, sets `last` to the data, appends the new
//! counter to `items`, and answers with the data; `fail` answers
//! unsuccessfully with `"requested failure: <data>"`; `state` answers with
//! the state; `notify` sends a notify named `data.name` with `data.data`
//! and answers null; `set` puts `data.value` at the key/index list
//! `data.path` and answers true; any other name answers unsuccessfully with
//! `"unknown request: <name>"`. With a ticker ([`spawn_ticker`]), `tick`
//! grows by one every period.

use std::time::Duration;

use serde_json::{json, Value};

use super::server::ServerConnection;

/// Every connection's initial state.
pub fn initial_state() -> Value {
    json!({"counter": 0, "last": null, "items": [], "tick": 0})
}

/// Adds one to the connection's `tick` every `every`, until it closes
/// (`plexwire session serve --tick S`).
pub fn spawn_ticker(conn: ServerConnection, every: Duration) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                _ = conn.closed() => return,
                _ = interval.tick() => conn.update_state(|s| {
                    s["tick"] = json!(s["tick"].as_i64().unwrap_or(0) + 1);
                }),
            }
        }
    });
}

/// Answers one request of the demo application.
pub async fn handle(conn: ServerConnection, name: String, data: Value) -> Result<Value, String> {
    match name.as_str() {
        "echo" => {
            conn.notify("echoed", data.clone());
            conn.update_state(|s| {
                let n = s["counter"].as_i64().unwrap_or(0) + 1;
                s["counter"] = json!(n);
                s["last"] = data.clone();
                if let Some(items) = s["items"].as_array_mut() {
                    items.push(json!(n));
                }
            });
            Ok(data)
        }
        "fail" => Err(format!(
            "requested failure: {}",
            data.as_str().map(str::to_owned).unwrap_or(data.to_string())
        )),
        "state" => Ok(conn.state()),
        "notify" => {
            conn.notify(data["name"].as_str().unwrap_or(""), data["data"].clone());
            Ok(Value::Null)
        }
        "set" => {
            let mut state = conn.state();
            set_at(&mut state, &data["path"], data["value"].clone())?;
            conn.set_state(state);
            Ok(Value::Bool(true))
        }
        other => Err(format!("unknown request: {other}")),
    }
}

/// Puts `value` at `path` (a list of object keys and array indexes) in
/// `state`. The last key may be new (it is added); an index must exist (or
/// be the array's length, to append). On an error `state` may be half
/// changed: callers work on a copy.
fn set_at(state: &mut Value, path: &Value, value: Value) -> Result<(), String> {
    let steps = path
        .as_array()
        .ok_or_else(|| format!("`path` must be a list of keys and indexes, not {path}"))?;
    let mut at = state;
    for (i, step) in steps.iter().enumerate() {
        let last = i + 1 == steps.len();
        at = match (at, step) {
            (Value::Object(map), Value::String(key)) => {
                if last {
                    map.insert(key.clone(), value);
                    return Ok(());
                }
                map.entry(key.clone()).or_insert(Value::Null)
            }
            (Value::Array(items), Value::Number(n)) => {
                let index = n
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .filter(|&n| n <= items.len())
                    .ok_or_else(|| format!("index {n} is outside a list of {}", items.len()))?;
                if index == items.len() {
                    items.push(Value::Null);
                }
                if last {
                    items[index] = value;
                    return Ok(());
                }
                &mut items[index]
            }
            (here, step) => {
                let kind = match here {
                    Value::Null => "null",
                    Value::Bool(_) => "a boolean",
                    Value::Number(_) => "a number",
                    Value::String(_) => "a string",
                    Value::Array(_) => "a list",
                    Value::Object(_) => "an object",
                };
                return Err(format!(
                    "step {} of the path ({step}) cannot go into {kind}",
                    i + 1
                ));
            }
        };
    }
    *at = value;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_walks_keys_and_indexes() {
        let mut s = initial_state();
        set_at(&mut s, &json!(["last"]), json!({"a": [1, 2]})).unwrap();
        set_at(&mut s, &json!(["last", "a", 1]), json!("two")).unwrap();
        set_at(&mut s, &json!(["last", "a", 2]), json!(3)).unwrap();
        // A missing key is added only as the last step: nothing to step into.
        assert!(set_at(&mut s.clone(), &json!(["new", "deep"]), json!(true)).is_err());
        assert_eq!(s["last"], json!({"a": [1, "two", 3]}));
        assert!(set_at(&mut s, &json!(["items", 5]), json!(0)).is_err());
        assert!(set_at(&mut s, &json!("items"), json!(0)).is_err());
        set_at(&mut s, &json!([]), json!({"replaced": true})).unwrap();
        assert_eq!(s, json!({"replaced": true}));
    }
}
