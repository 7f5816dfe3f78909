//! Micro-benchmarks: framing, packet codecs, and the switchboard (sans-IO).
//!
//! ```sh
//! cargo bench --bench micro
//! ```

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use plexwire::broker::{Side, Switchboard, SwitchboardConfig};
use plexwire::codec::{Bincode, Codec, Json};
use plexwire::protocol::{Packet, Payload};
use plexwire_transport::FrameCodec;
use tokio_util::codec::{Decoder, Encoder};
use uuid::Uuid;

fn small_run() -> Packet {
    // A small RUN as in the issue's figures: 64 bytes of payload.
    Packet::run(
        Uuid::new_v4(),
        "echo",
        Some(Payload::to_json(&"x".repeat(62)).unwrap()),
        false,
    )
}

fn framing(c: &mut Criterion) {
    let mut g = c.benchmark_group("framing");
    let frame = Bytes::from(vec![7u8; 250]);
    g.throughput(Throughput::Elements(64));
    g.bench_function("encode 64 frames of 250 B", |b| {
        let mut codec = FrameCodec::new(16 << 20);
        let mut out = BytesMut::with_capacity(64 * 260);
        b.iter(|| {
            out.clear();
            for _ in 0..64 {
                codec.encode(frame.clone(), &mut out).unwrap();
            }
            black_box(&out);
        })
    });
    let mut wire = BytesMut::new();
    let mut codec = FrameCodec::new(16 << 20);
    for _ in 0..64 {
        codec.encode(frame.clone(), &mut wire).unwrap();
    }
    g.bench_function("decode 64 frames of 250 B", |b| {
        b.iter(|| {
            let mut buf = wire.clone();
            let mut n = 0;
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                n += f.len();
            }
            black_box(n)
        })
    });
    g.finish();
}

fn codecs(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    let p = small_run();
    let json = Json.encode(&p).unwrap();
    let bin = Bincode.encode(&p).unwrap();
    g.bench_function("json encode RUN", |b| {
        b.iter(|| black_box(Json.encode(black_box(&p)).unwrap()))
    });
    g.bench_function("json decode RUN", |b| {
        b.iter(|| black_box(Json.decode(black_box(&json)).unwrap()))
    });
    g.bench_function("json encode+decode RUN", |b| {
        b.iter(|| black_box(Json.decode(&Json.encode(black_box(&p)).unwrap()).unwrap()))
    });
    g.bench_function("bincode encode RUN", |b| {
        b.iter(|| black_box(Bincode.encode(black_box(&p)).unwrap()))
    });
    g.bench_function("bincode decode RUN", |b| {
        b.iter(|| black_box(Bincode.decode(black_box(&bin)).unwrap()))
    });
    g.bench_function("bincode encode+decode RUN", |b| {
        b.iter(|| {
            black_box(
                Bincode
                    .decode(&Bincode.encode(black_box(&p)).unwrap())
                    .unwrap(),
            )
        })
    });
    g.finish();
}

fn switchboard(c: &mut Criterion) {
    let mut g = c.benchmark_group("switchboard");
    g.bench_function("RUN -> dispatch, RESULT -> route (8 workers)", |b| {
        let mut s = Switchboard::new(SwitchboardConfig::default());
        s.handle_connect(1, Side::Client, true);
        for w in 0..8 {
            s.handle_connect(100 + w, Side::Worker, true);
            s.handle_packet(100 + w, Packet::register(64, None));
        }
        let payload = Payload::to_json(&"x".repeat(62)).unwrap();
        b.iter(|| {
            let cookie = Uuid::new_v4();
            s.handle_packet(1, Packet::run(cookie, "echo", Some(payload.clone()), false));
            let to = s.poll_transmit().unwrap().to;
            s.handle_packet(to, Packet::ok(cookie, Some(payload.clone())));
            black_box(s.poll_transmit().unwrap());
        })
    });
    g.bench_function("RUN queued behind 100, then dispatched", |b| {
        let mut s = Switchboard::new(SwitchboardConfig {
            queue_limit: 1_000_000,
            ..SwitchboardConfig::default()
        });
        s.handle_connect(1, Side::Client, true);
        s.handle_connect(100, Side::Worker, true);
        s.handle_packet(100, Packet::register(1, None));
        let mut held = Uuid::new_v4();
        s.handle_packet(1, Packet::run(held, "echo", None, false));
        s.poll_transmit();
        let mut queued = std::collections::VecDeque::new();
        for _ in 0..100 {
            let c = Uuid::new_v4();
            s.handle_packet(1, Packet::run(c, "echo", None, false));
            queued.push_back(c);
        }
        b.iter(|| {
            let c = Uuid::new_v4();
            s.handle_packet(1, Packet::run(c, "echo", None, false));
            queued.push_back(c);
            s.handle_packet(100, Packet::ok(held, None));
            while let Some(t) = s.poll_transmit() {
                black_box(t);
            }
            held = queued.pop_front().unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, framing, codecs, switchboard);
criterion_main!(benches);
