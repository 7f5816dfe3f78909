//! `plexwire session serve`: the hat-juggler demo application
//! (`plexwire::session::demo`) on a juggler WebSocket server, for the real
//! hat-juggler client, a browser, or a quick look at the protocol.

use std::process::ExitCode;

use plexwire::session::server::{listen, ServerConnection, ServerOptions};
use plexwire::session::{demo, SessionConfig};
use plexwire::transport::{Address, Endpoint};

#[derive(clap::Args, Debug)]
pub(crate) struct SessionArgs {
    #[command(subcommand)]
    command: SessionCommand,
}

#[derive(clap::Subcommand, Debug)]
enum SessionCommand {
    /// Serve the demo application (echo, fail, state, notify, set) to juggler
    /// clients until Ctrl-C or SIGTERM.
    Serve {
        /// Where to listen: ws://host:port/path (the WebSocket path), or
        /// http://host:port (the path is /ws). Port 0 picks a free one.
        #[arg(long, default_value = "ws://127.0.0.1:23023/ws")]
        listen: String,
        /// The longest segment a message is cut into, in characters.
        #[arg(long, default_value_t = SessionConfig::default().max_segment_size)]
        max_segment_size: usize,
        /// Add one to each connection's `tick` every this many seconds.
        #[arg(long, value_parser = crate::args::positive_seconds)]
        tick: Option<std::time::Duration>,
    },
}

/// `ws://host:port/path` → (`http://host:port`, `/path`).
fn http_and_path(url: &str) -> Result<(String, String), String> {
    let ep = Endpoint::parse(url).map_err(|e| e.to_string())?;
    if !matches!(ep.scheme(), "ws" | "http") {
        return Err(format!(
            "--listen takes ws://host:port/path or http://host:port, not `{url}`"
        ));
    }
    let Address::Host { host, port, path } = ep.address() else {
        return Err(format!("--listen needs a host and a port: `{url}`"));
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    let path = if path.is_empty() || path == "/" {
        "/ws".to_owned()
    } else {
        path.clone()
    };
    Ok((format!("http://{host}:{port}"), path))
}

pub(crate) async fn run(args: SessionArgs) -> Result<ExitCode, String> {
    match args.command {
        SessionCommand::Serve {
            listen: url,
            max_segment_size,
            tick,
        } => {
            let (http, ws_path) = http_and_path(&url)?;
            let options = ServerOptions {
                ws_path: ws_path.clone(),
                session: SessionConfig {
                    max_segment_size: max_segment_size.max(1),
                    ..SessionConfig::default()
                },
                ..ServerOptions::default()
            };
            let mut signals = crate::signals::Signals::new()?;
            let server = listen(
                &http,
                options,
                std::sync::Arc::new(move |conn: ServerConnection| {
                    conn.set_state(demo::initial_state());
                    if let Some(every) = tick {
                        demo::spawn_ticker(conn, every);
                    }
                }),
                std::sync::Arc::new(|conn, name, data| Box::pin(demo::handle(conn, name, data))),
            )
            .await
            .map_err(|e| e.to_string())?;
            let bound = server
                .local_endpoint()
                .url()
                .trim_end_matches('/')
                .to_owned();
            let ws = format!("ws{}{ws_path}", &bound[4..]);
            println!("session: {ws}");
            let first = signals.next().await;
            println!("{first}: stopping");
            drop(server);
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::http_and_path;

    #[test]
    fn listen_urls() {
        assert_eq!(
            http_and_path("ws://127.0.0.1:0/ws").unwrap(),
            ("http://127.0.0.1:0".to_owned(), "/ws".to_owned())
        );
        assert_eq!(
            http_and_path("http://[::1]:80").unwrap(),
            ("http://[::1]:80".to_owned(), "/ws".to_owned())
        );
        assert_eq!(
            http_and_path("ws://localhost:1/juggler").unwrap().1,
            "/juggler"
        );
        assert!(http_and_path("tcp://127.0.0.1:1").is_err());
    }
}
