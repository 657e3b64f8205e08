//! Criterion micro-benchmarks for `plantd-edge`: the codec (decode and
//! encode of 3.1.1 and 5.0 PUBLISH) and subscription matching against
//! 100,000 subscriptions.
//!
//! ```sh
//! cargo bench -p plantd-edge --bench edge_micro
//! ```

use std::hint::black_box;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use plantd_edge::mailbox::Mailbox;
use plantd_edge::protocol::v5::{Properties, SubscriptionOptions};
use plantd_edge::protocol::{QoS, split_frame, v4, v5};
use plantd_edge::router::subscriptions::{Member, SubEntry, SubscriptionIndex};
use plantd_shared::topic::SubscriptionFilter;

fn publish_v4() -> BytesMut {
    let mut out = BytesMut::new();
    v4::Packet::Publish(v4::Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "site/line1/press/temp".into(),
        pkid: 7,
        payload: Bytes::from(vec![b'x'; 64]),
    })
    .write(&mut out);
    out
}

fn publish_v5() -> BytesMut {
    let mut out = BytesMut::new();
    v5::Packet::Publish(v5::Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "site/line1/press/temp".into(),
        pkid: 7,
        properties: Properties {
            content_type: Some("application/json".into()),
            user_properties: vec![("unit".into(), "C".into())],
            ..Properties::default()
        },
        payload: Bytes::from(vec![b'x'; 64]),
    })
    .write(&mut out);
    out
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    let v4_frame = publish_v4().freeze();
    g.bench_function("decode v4 PUBLISH 64 B", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&v4_frame[..]);
            let (h, body) = split_frame(&mut buf, 1 << 20)
                .expect("frame")
                .expect("complete");
            black_box(v4::Packet::read(&h, body).expect("decodes"))
        })
    });
    let v5_frame = publish_v5().freeze();
    g.bench_function("decode v5 PUBLISH 64 B + properties", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&v5_frame[..]);
            let (h, body) = split_frame(&mut buf, 1 << 20)
                .expect("frame")
                .expect("complete");
            black_box(v5::Packet::read(&h, body).expect("decodes"))
        })
    });
    let payload = vec![b'x'; 64];
    let mut out = BytesMut::with_capacity(1 << 20);
    g.bench_function("encode v4 PUBLISH 64 B", |b| {
        b.iter(|| {
            if out.len() > (1 << 19) {
                out.clear();
            }
            v4::write_publish(
                &mut out,
                false,
                QoS::AtLeastOnce,
                false,
                "site/line1/press/temp",
                7,
                &payload,
            );
        })
    });
    g.bench_function("encode v5 PUBLISH 64 B, no properties", |b| {
        b.iter(|| {
            if out.len() > (1 << 19) {
                out.clear();
            }
            v5::write_publish(
                &mut out,
                false,
                QoS::AtLeastOnce,
                false,
                "site/line1/press/temp",
                7,
                None,
                &payload,
            );
        })
    });
    g.finish();
}

fn matching(c: &mut Criterion) {
    let mut idx = SubscriptionIndex::default();
    let member = Member {
        entry: SubEntry {
            options: SubscriptionOptions::default(),
            id: None,
        },
        mailbox: Arc::new(Mailbox::new(10, Default::default())),
    };
    // 100,000 subscriptions over 100 sites: exact, single-level and
    // multi-level wildcard filters, plus a few leading wildcards.
    for i in 0..100_000u32 {
        let site = i % 100;
        let filter = match i % 4 {
            0 => format!("site{site}/line{}/temp", i / 100),
            1 => format!("site{site}/+/press{}", i / 100),
            2 => format!("site{site}/line{}/#", i / 100),
            _ if i % 1000 == 3 => format!("+/line{}/alarm", i / 1000),
            _ => format!("site{site}/dev{}", i / 100),
        };
        let sf = SubscriptionFilter::parse(&filter).expect("valid filter");
        idx.insert(&Arc::from(format!("client-{i}")), &sf, member.clone());
    }
    let mut g = c.benchmark_group("matching");
    g.throughput(Throughput::Elements(1));
    g.bench_function("topic against 100k subscriptions", |b| {
        b.iter(|| {
            let mut n = 0;
            idx.for_each_match(black_box("site42/line542/temp"), |s| n += s.clients.len());
            black_box(n)
        })
    });
    g.finish();
}

criterion_group!(benches, codec, matching);
criterion_main!(benches);
