//! Odd arguments are refused before anything starts: each bad value exits
//! with clap's usage code (2) and a message that names the flag and what it
//! takes, instead of a panic at shutdown, a silent 0 or an idle worker.

use std::process::Command;

fn refused(args: &[&str], says: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_plexwire"))
        .args(args)
        .output()
        .expect("run plexwire");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?} was not refused: {stderr}"
    );
    assert!(
        stderr.contains(says),
        "{args:?}: expected `{says}` in: {stderr}"
    );
}

#[test]
fn durations_are_finite_and_in_range() {
    for v in ["inf", "1e30", "nan", "-1", "soon"] {
        refused(&["broker", &format!("--grace={v}")], "--grace");
        refused(&["run", "echo", &format!("--timeout={v}")], "--timeout");
        refused(&["stats", &format!("--wait={v}")], "--wait");
    }
    refused(&["run", "echo", "--timeout", "0"], "more than 0 seconds");
}

#[test]
fn capacity_is_between_1_and_65536() {
    refused(&["worker", "--capacity", "0"], "1..=65536");
    refused(&["worker", "--capacity", "65537"], "1..=65536");
}

#[test]
fn vars_are_a_json_object() {
    refused(&["run", "echo", "--vars", "[1, 2]"], "not an object");
    refused(&["run", "echo", "--vars", "{"], "not JSON");
}

#[test]
fn a_token_comes_from_one_place() {
    let out = Command::new(env!("CARGO_BIN_EXE_plexwire"))
        .args(["worker", "--token", "a", "--token-file", "/nonexistent"])
        .output()
        .expect("run plexwire");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("not both"), "{stderr}");
}
