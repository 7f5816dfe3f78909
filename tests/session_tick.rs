//! The demo application's ticker (`plexwire session serve --tick`): a
//! connection's `tick` grows while it is open, seen by a juggler client
//! (the sans-IO `Session` in the client role over a real `ws://`
//! connection), and the server side learns the connection has ended
//! (`ServerConnection::closed`), which stops the ticker.

#![cfg(feature = "session")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use plexwire::session::server::{listen, ServerConnection, ServerOptions};
use plexwire::session::{demo, Role, Session, SessionConfig};
use tokio::time::timeout;

#[tokio::test]
async fn a_ticking_state_reaches_the_client_and_the_ticker_stops_with_the_connection() {
    let seen: Arc<Mutex<Option<ServerConnection>>> = Arc::default();
    let slot = seen.clone();
    let server = listen(
        "http://127.0.0.1:0",
        ServerOptions::default(),
        Arc::new(move |conn: ServerConnection| {
            conn.set_state(demo::initial_state());
            demo::spawn_ticker(conn.clone(), Duration::from_millis(20));
            *slot.lock().unwrap() = Some(conn);
        }),
        Arc::new(|conn, name, data| Box::pin(demo::handle(conn, name, data))),
    )
    .await
    .unwrap();
    let url = format!(
        "ws{}/ws",
        server.local_endpoint().url()[4..].trim_end_matches('/')
    );
    let connection = plexwire::transport::connect(&url).await.unwrap();
    let (tx, mut rx) = connection.into_frames();
    let mut client = Session::new(
        Role::Client,
        SessionConfig::default(),
        std::time::Instant::now(),
    );
    timeout(Duration::from_secs(10), async {
        loop {
            let frame = rx.recv_frame().await.expect("open").expect("a frame");
            client
                .handle_frame(std::time::Instant::now(), &String::from_utf8_lossy(&frame))
                .expect("a valid juggler frame");
            if client.remote_state()["tick"].as_i64().unwrap_or(0) >= 3 {
                return;
            }
        }
    })
    .await
    .expect("the tick reached 3");
    assert_eq!(
        client.remote_state()["counter"],
        0,
        "the rest of the state as it was"
    );

    let conn = seen
        .lock()
        .unwrap()
        .clone()
        .expect("the server saw the connection");
    assert!(!conn.is_closed());
    drop((tx, rx));
    timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("the server noticed the close");
}

/// Dropping the server closes its connections (going away) and stops what
/// feeds them.
#[tokio::test]
async fn dropping_the_server_closes_its_connections() {
    let seen: Arc<Mutex<Option<ServerConnection>>> = Arc::default();
    let slot = seen.clone();
    let server = listen(
        "http://127.0.0.1:0",
        ServerOptions::default(),
        Arc::new(move |conn: ServerConnection| {
            conn.set_state(demo::initial_state());
            demo::spawn_ticker(conn.clone(), Duration::from_millis(20));
            *slot.lock().unwrap() = Some(conn);
        }),
        Arc::new(|conn, name, data| Box::pin(demo::handle(conn, name, data))),
    )
    .await
    .unwrap();
    let url = format!(
        "ws{}/ws",
        server.local_endpoint().url()[4..].trim_end_matches('/')
    );
    let (_tx, mut rx) = plexwire::transport::connect(&url)
        .await
        .unwrap()
        .into_frames();
    rx.recv_frame()
        .await
        .expect("open")
        .expect("the first state");
    let conn = seen
        .lock()
        .unwrap()
        .clone()
        .expect("the server saw the connection");
    drop(server);
    timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("the connection ended with the server");
    // The client sees the end of the stream.
    timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = rx.recv_frame().await {}
    })
    .await
    .expect("the client saw the close");
}
