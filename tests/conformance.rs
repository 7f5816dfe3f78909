//! One conformance suite, run against every backend of
//! `plexwire::transport::registry()`.
//!
//! Each case is one test that runs over every loopback variant of every
//! registered backend (`tcp`, `tcp_v6`, `unix`, `tls_unix`, …) in turn and
//! names the ones that failed; a backend joins by being registered, with no
//! edit here. Each variant gives a fresh [`Backend`]: the URL to listen on,
//! and what a connecting side adds to the listener's address (nothing, or
//! for the TLS-based backends the CA to trust). `PLEXWIRE_BACKENDS=quic,tcp`
//! narrows a run to those variants.

mod common;

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use plexwire::transport::{self, Connection, ServerTransport, TransportError};
use tokio::time::timeout;

use common::Backend;

const LIMIT: Duration = Duration::from_secs(20);

async fn pair(b: &Backend, listener: &mut Box<dyn ServerTransport>) -> (Connection, Connection) {
    let url = b.connect_url(listener.local_endpoint());
    let (client, server) = tokio::join!(transport::connect(&url), listener.accept());
    (client.expect("connect"), server.expect("accept"))
}

pub async fn connect_and_accept(b: Backend) {
    let mut l = transport::listen(&b.listen).await.unwrap();
    let (c, s) = pair(&b, &mut l).await;
    assert_eq!(c.peer().transport, s.peer().transport);
    assert!(!s.peer().remote.is_empty());
}

pub async fn frames_both_ways_concurrently(b: Backend) {
    let mut l = transport::listen(&b.listen).await.unwrap();
    let (c, s) = pair(&b, &mut l).await;
    let (mut ctx, mut crx) = c.into_frames();
    let (mut stx, mut srx) = s.into_frames();
    const N: usize = 500;
    let frame = |side: u8, i: usize| Bytes::from(vec![side; i % 300 + (i % 3)]);
    let send_c = async {
        for i in 0..N {
            ctx.send_frame(frame(1, i)).await.unwrap();
        }
    };
    let send_s = async {
        for i in 0..N {
            stx.send_frame(frame(2, i)).await.unwrap();
        }
    };
    let recv_s = async {
        for i in 0..N {
            assert_eq!(srx.recv_frame().await.unwrap().unwrap(), frame(1, i));
        }
    };
    let recv_c = async {
        for i in 0..N {
            assert_eq!(crx.recv_frame().await.unwrap().unwrap(), frame(2, i));
        }
    };
    timeout(LIMIT, async {
        tokio::join!(send_c, send_s, recv_s, recv_c)
    })
    .await
    .unwrap();
}

pub async fn frame_at_the_limit_passes_one_over_is_rejected(b: Backend) {
    const MAX: usize = 64 * 1024;
    let url = b.listen_with(&format!("max_frame_size={MAX}"));
    let mut l = transport::listen(&url).await.unwrap();
    let (c, s) = pair(&b, &mut l).await;
    let (mut ctx, _crx) = c.into_frames();
    let (_stx, mut srx) = s.into_frames();
    let big = Bytes::from(vec![0xab; MAX]);
    let (sent, got) = tokio::join!(ctx.send_frame(big.clone()), srx.recv_frame());
    sent.unwrap();
    assert_eq!(got.unwrap().unwrap(), big);
    match ctx.send_frame(Bytes::from(vec![0; MAX + 1])).await {
        Err(TransportError::FrameTooLarge { size, max }) => assert_eq!((size, max), (MAX + 1, MAX)),
        other => panic!("{other:?}"),
    }
    // The sender is still usable after refusing the oversized frame.
    let (sent, got) = tokio::join!(
        ctx.send_frame(Bytes::from_static(b"after")),
        srx.recv_frame()
    );
    sent.unwrap();
    assert_eq!(&got.unwrap().unwrap()[..], b"after");
}

pub async fn oversized_frame_from_a_peer_is_a_typed_error(b: Backend) {
    // The receiver's limit is below the sender's.
    let mut l = transport::listen(&b.listen_with("max_frame_size=1000"))
        .await
        .unwrap();
    let client_url = b.connect_url_with_limit(l.local_endpoint(), 5000);
    let (c, s) = tokio::join!(transport::connect(&client_url), l.accept());
    let (mut ctx, _crx) = c.unwrap().into_frames();
    let (_stx, mut srx) = s.unwrap().into_frames();
    ctx.send_frame(Bytes::from(vec![1; 1001])).await.unwrap();
    match timeout(LIMIT, srx.recv_frame()).await.unwrap() {
        Some(Err(TransportError::FrameTooLarge {
            size: 1001,
            max: 1000,
        })) => {}
        other => panic!("{other:?}"),
    }
    assert!(
        srx.recv_frame().await.is_none(),
        "the stream ends after the error"
    );
}

pub async fn two_hundred_concurrent_connections(b: Backend) {
    let mut l = transport::listen(&b.listen).await.unwrap();
    let url = b.connect_url(l.local_endpoint());
    let server = tokio::spawn(async move {
        let mut echoes = Vec::new();
        for _ in 0..200 {
            let (mut tx, mut rx) = l.accept().await.unwrap().into_frames();
            echoes.push(tokio::spawn(async move {
                while let Some(Ok(f)) = rx.recv_frame().await {
                    tx.send_frame(f).await.unwrap();
                }
            }));
        }
        join_all(echoes).await;
    });
    let clients = (0..200u32).map(|i| {
        let url = url.clone();
        async move {
            let (mut tx, mut rx) = transport::connect(&url).await.unwrap().into_frames();
            let msg = Bytes::from(i.to_be_bytes().to_vec());
            tx.send_frame(msg.clone()).await.unwrap();
            assert_eq!(rx.recv_frame().await.unwrap().unwrap(), msg);
        }
    });
    timeout(LIMIT, join_all(clients)).await.unwrap();
    timeout(LIMIT, server).await.unwrap().unwrap();
}

pub async fn peer_close_is_end_of_stream(b: Backend) {
    let mut l = transport::listen(&b.listen).await.unwrap();
    let (c, s) = pair(&b, &mut l).await;
    let (mut ctx, crx) = c.into_frames();
    let (_stx, mut srx) = s.into_frames();
    ctx.send_frame(Bytes::from_static(b"last")).await.unwrap();
    ctx.shutdown().await.unwrap();
    drop((ctx, crx));
    assert_eq!(&srx.recv_frame().await.unwrap().unwrap()[..], b"last");
    assert!(timeout(LIMIT, srx.recv_frame()).await.unwrap().is_none());
}

pub async fn listener_shutdown_refuses_new_connections(b: Backend) {
    let l = transport::listen(&b.listen).await.unwrap();
    let bound = l.local_endpoint().url().to_owned();
    let url = b.connect_url(l.local_endpoint());
    drop(l);
    let e = transport::connect(&url).await.unwrap_err();
    assert!(matches!(e, TransportError::Connect { .. }), "{e:?}");
    // The address can be bound again at once.
    if !bound.contains(":0") {
        transport::listen(&bound)
            .await
            .expect("rebind after shutdown");
    }
}

pub async fn connecting_to_nothing_is_a_clear_error(b: Backend) {
    let l = transport::listen(&b.listen).await.unwrap();
    let url = b.connect_url(l.local_endpoint());
    drop(l);
    let e = transport::connect(&url).await.unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("could not connect to `{url}`")),
        "{e}"
    );
    assert!(e.contains("is a plexwire listener running there?"), "{e}");
}

/// A protocol of its own, in a few lines: its message is a number and a
/// text, framed with cs.packetstream's BSUInt prefix on byte streams. It runs
/// over the same connection layer as the broker protocol (writer, reader,
/// control lane), on every backend.
mod stub {
    use bytes::{BufMut, Bytes, BytesMut};
    use plexwire::link::{Outgoing, Wire};
    use plexwire::transport::{parse_bsuint, put_bsuint};

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Note {
        pub n: u64,
        pub text: String,
    }

    #[derive(Clone)]
    pub struct Notes;

    impl Wire for Notes {
        type Message = Note;
        type Control = ();
        type DecodeError = std::io::Error;

        fn size_hint(note: &Note) -> usize {
            10 + note.text.len()
        }

        fn encode(&mut self, note: Note, _max: usize) -> Option<Outgoing> {
            let mut out = BytesMut::new();
            put_bsuint(&mut out, note.n);
            out.put_slice(note.text.as_bytes());
            Some(Outgoing::main(out.freeze()))
        }

        fn encode_control(&mut self, (): ()) -> Option<Outgoing> {
            // A note with no text and the largest number: "are you there?".
            self.encode(
                Note {
                    n: u64::MAX,
                    text: String::new(),
                },
                usize::MAX,
            )
        }

        fn decode(&self, frame: &Bytes) -> Result<Note, std::io::Error> {
            let bad =
                |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
            let (n, used) = parse_bsuint(frame)
                .map_err(|e| bad(&e.to_string()))?
                .ok_or_else(|| bad("no number"))?;
            let text = std::str::from_utf8(&frame[used..]).map_err(|_| bad("text is not UTF-8"))?;
            Ok(Note {
                n,
                text: text.to_owned(),
            })
        }
    }
}

pub async fn a_protocol_of_its_own_runs_over_the_shared_layer(b: Backend) {
    use plexwire::link::{spawn_writer, Reader, WriterConfig};
    use plexwire::transport::Framing;
    use stub::{Note, Notes};
    use tokio_util::sync::CancellationToken;

    let mut l = transport::listen(&b.listen).await.unwrap();
    let (c, s) = pair(&b, &mut l).await;
    let config = WriterConfig {
        queue: 8,
        max_bytes: 1 << 16,
        control_queue: 4,
    };
    // The server answers each note with the next number, and the probe in kind.
    let server = tokio::spawn(async move {
        let (tx, rx) = s.into_frames_with(Framing::Bsuint);
        let (out, writer) = spawn_writer(tx, Notes, config, CancellationToken::new());
        let mut rx = Reader::new(rx, Notes);
        while let Some(note) = rx.recv().await {
            let note = note.expect("a note");
            if note.n == u64::MAX {
                assert!(out.try_send_control(()));
            } else {
                out.send(Note {
                    n: note.n + 1,
                    text: note.text,
                })
                .await
                .unwrap();
            }
        }
        drop(out);
        writer.await.unwrap();
    });
    let (tx, rx) = c.into_frames_with(Framing::Bsuint);
    let (out, writer) = spawn_writer(tx, Notes, config, CancellationToken::new());
    let mut rx = Reader::new(rx, Notes);
    let sent = 300u64;
    let reading = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(note) = rx.recv().await {
            got.push(note.expect("a note"));
        }
        got
    });
    for n in 0..sent {
        out.send(Note {
            n: n * 1000,
            text: format!("note {n} ✓"),
        })
        .await
        .unwrap();
    }
    assert!(out.try_send_control(()));
    drop(out);
    writer.await.unwrap();
    let got = timeout(LIMIT, reading)
        .await
        .expect("answers in time")
        .unwrap();
    let (probes, notes): (Vec<_>, Vec<_>) = got.into_iter().partition(|n| n.n == u64::MAX);
    assert_eq!(probes.len(), 1, "the probe came back once");
    assert_eq!(notes.len() as u64, sent);
    for (i, note) in notes.iter().enumerate() {
        assert_eq!(
            note,
            &Note {
                n: i as u64 * 1000 + 1,
                text: format!("note {i} ✓")
            }
        );
    }
    timeout(LIMIT, server).await.expect("server done").unwrap();
}

/// One test per case, over every variant.
macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        mod over_every_backend {
            $(
                #[tokio::test]
                async fn $case() {
                    crate::common::each(crate::common::variants(), |v| super::$case(v.fresh())).await;
                }
            )*
        }
    };
}

cases!(
    connect_and_accept,
    frames_both_ways_concurrently,
    frame_at_the_limit_passes_one_over_is_rejected,
    oversized_frame_from_a_peer_is_a_typed_error,
    two_hundred_concurrent_connections,
    peer_close_is_end_of_stream,
    listener_shutdown_refuses_new_connections,
    connecting_to_nothing_is_a_clear_error,
    a_protocol_of_its_own_runs_over_the_shared_layer,
);

/// The variants the suites run over include every compiled-in backend.
#[test]
fn every_registered_backend_is_covered() {
    let labels: Vec<String> = common::variants().into_iter().map(|v| v.label).collect();
    if std::env::var_os("PLEXWIRE_BACKENDS").is_some() {
        return; // narrowed on purpose
    }
    for b in transport::registry().backends() {
        assert!(
            common::variants()
                .iter()
                .any(|v| b.scheme(v.scheme).is_some()),
            "backend {} has no loopback variant ({labels:?})",
            b.name()
        );
    }
    for expected in ["mem", "tcp", "tcp_v6", "unix"] {
        assert!(
            labels.iter().any(|l| l == expected),
            "{expected} missing: {labels:?}"
        );
    }
}
