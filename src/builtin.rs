//! Built-in pipelines, served by `plexwire worker` and used by the demo and tests.
//!
//! | pipeline | variables | result |
//! |---|---|---|
//! | `echo` | anything | the variables, unchanged |
//! | `add` | `{"a": n, "b": m}` | `n + m` |
//! | `sleep` | `{"seconds": s}` | `"slept"` after `s` seconds; honours cancel |
//! | `fail` | `{"message": "…"}` (optional) | PROCESSOR_EXCEPTION |
//! | `count` | `{"to": n, "interval_ms": t}` | streams events 1..=n, then returns n |

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::protocol::Payload;
use crate::worker::{HandlerError, Worker};

#[derive(Deserialize)]
struct Add {
    a: f64,
    b: f64,
}

#[derive(Deserialize)]
struct Sleep {
    #[serde(default)]
    seconds: f64,
}

#[derive(Deserialize)]
struct Fail {
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct Count {
    #[serde(default = "ten")]
    to: u64,
    #[serde(default)]
    interval_ms: u64,
}

fn ten() -> u64 {
    10
}

/// The largest sleep `sleep` accepts, so a typo cannot park a slot for years.
const MAX_SLEEP_SECONDS: f64 = 86_400.0;

/// Adds the built-in pipelines to `worker`.
pub fn register(worker: Worker) -> Worker {
    worker
        // Raw: the variables' bytes go back untouched (no parse, no re-encode).
        .raw_pipeline("echo", |_ctx, v| async move {
            Ok::<_, HandlerError>(Some(v.unwrap_or_else(|| Payload::from_json_text("{}"))))
        })
        .pipeline("add", |_ctx, v: Add| async move {
            let sum = v.a + v.b;
            // Integers stay integers on the wire.
            Ok::<_, HandlerError>(if sum.fract() == 0.0 && sum.abs() < 9.0e15 {
                Value::from(sum as i64)
            } else {
                Value::from(sum)
            })
        })
        .pipeline("sleep", |ctx, v: Sleep| async move {
            if !(0.0..=MAX_SLEEP_SECONDS).contains(&v.seconds) || !v.seconds.is_finite() {
                return Err(HandlerError::msg(format!(
                    "seconds must be between 0 and {MAX_SLEEP_SECONDS}, got {}",
                    v.seconds
                )));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs_f64(v.seconds)) => Ok("slept"),
                _ = ctx.cancelled() => Err(HandlerError::msg("cancelled")),
            }
        })
        .pipeline("fail", |_ctx, v: Fail| async move {
            Err::<(), _>(HandlerError {
                message: v
                    .message
                    .unwrap_or_else(|| "the fail pipeline always fails".into()),
                stacktrace: vec!["builtin::fail".into()],
            })
        })
        .pipeline("count", |ctx, v: Count| async move {
            for i in 1..=v.to {
                ctx.emit(&i).await?;
                if v.interval_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(v.interval_ms)).await;
                }
            }
            Ok::<_, HandlerError>(v.to)
        })
}
