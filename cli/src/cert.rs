//! `plexwire cert --out DIR`: a development CA, a server certificate and a
//! client certificate, written to DIR, and the exact commands that use them —
//! so TLS (and QUIC) can be tried in a minute. Not for production: see
//! `plexwire_tls::dev`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use plexwire::transport::encode_url_part;

#[cfg(all(feature = "quic", not(feature = "tls")))]
use plexwire::transport::quic::dev;
#[cfg(feature = "tls")]
use plexwire::transport::tls::dev;

#[derive(clap::Args, Debug)]
pub(crate) struct CertArgs {
    /// Directory for ca.pem, server.pem, server.key, client.pem, client.key (created if missing; files replaced).
    #[arg(long)]
    out: PathBuf,
    /// A name the server certificate is valid for (repeatable): host names or IP addresses.
    #[arg(long = "host", default_values = ["localhost", "127.0.0.1", "::1"])]
    hosts: Vec<String>,
}

pub(crate) fn run(args: CertArgs) -> Result<ExitCode, String> {
    let hosts: Vec<&str> = args.hosts.iter().map(String::as_str).collect();
    let files = dev::write_dev_set(&args.out, &hosts)
        .map_err(|e| format!("cannot write certificates to {}: {e}", args.out.display()))?;
    let dir = std::fs::canonicalize(&args.out).unwrap_or(args.out.clone());
    let f = |p: &Path| {
        encode_url_part(
            &dir.join(p.file_name().unwrap_or_default())
                .to_string_lossy(),
        )
    };
    let (ca, cert, key) = (f(&files.ca), f(&files.server_cert), f(&files.server_key));
    let (client_cert, client_key) = (f(&files.client_cert), f(&files.client_key));
    // Connect by a name the certificate holds.
    let host = match hosts.iter().find(|h| **h == "127.0.0.1") {
        Some(h) => (*h).to_owned(),
        None => match hosts.first() {
            Some(h) if h.contains(':') => format!("[{h}]"),
            Some(h) => (*h).to_owned(),
            None => return Err("give at least one --host".into()),
        },
    };

    println!(
        "wrote a development CA and certificates for {hosts:?} to {}:",
        dir.display()
    );
    println!("  ca.pem                   the CA: clients trust it (ca=), listeners check client certificates with it (client_ca=)");
    println!("  server.pem, server.key   the broker's certificate and key (cert=, key= on its listeners)");
    println!("  client.pem, client.key   a client certificate for mutual TLS (cert=, key= on a worker or client)");
    println!("(development only: the CA's key was not kept, nothing can be revoked.)");
    println!();
    println!("Try TLS, in three terminals (the workers' listener requires client certificates):");
    println!();
    println!("  plexwire broker --clients 'tls://{host}:51500?cert={cert}&key={key}' \\");
    println!(
        "                  --workers 'tls://{host}:51510?cert={cert}&key={key}&client_ca={ca}'"
    );
    println!("  plexwire worker --broker 'tls://{host}:51510?ca={ca}&cert={client_cert}&key={client_key}'");
    println!("  plexwire run --broker 'tls://{host}:51500?ca={ca}' echo --vars '{{\"hi\": 1}}'");
    if cfg!(feature = "quic") {
        println!();
        println!("Or QUIC: the same URLs with quic:// instead of tls://.");
    }
    if cfg!(all(feature = "http", feature = "tls")) {
        println!();
        println!("Or HTTPS (passes HTTP proxies that pass upgrades): the same URLs with https:// instead of tls://.");
    }
    if !cfg!(feature = "tls") {
        println!("(This build has QUIC but not TLS: use quic:// in the commands above.)");
    }
    Ok(ExitCode::SUCCESS)
}
