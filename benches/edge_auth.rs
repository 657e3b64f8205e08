//! Criterion benchmarks for the edge's token checks: verifying a CONNECT
//! password (Ed25519 and ES256, key cached in memory, permissions compiled)
//! and the per-PUBLISH / per-SUBSCRIBE permission check against the
//! connection's compiled grants (no token parsing).
//!
//! ```sh
//! cargo bench -p plantd-edge --bench edge_auth
//! ```

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use plantd_bridge::trust::Trust;
use plantd_edge::auth::Authenticator;
use plantd_shared::claims::{Audience, Claims, MqttGrant, PrincipalKind, site_audience};
use plantd_shared::jwt::{SigningKey, jwks_of, now_secs};
use plantd_shared::subject::Site;
use plantd_shared::topic::Filter;

fn claims(site: &Site) -> Claims {
    let now = now_secs();
    let mut mqtt = BTreeMap::new();
    mqtt.insert(
        site.as_str().to_owned(),
        MqttGrant {
            publish: vec![
                "plant/line1/+/temp".into(),
                "plant/line1/+/pressure".into(),
                "status/dev-1".into(),
            ],
            subscribe: vec!["cmd/dev-1/#".into(), "plant/line1/#".into()],
        },
    );
    Claims {
        iss: "bench".into(),
        sub: "dev-1".into(),
        aud: Audience::One(site_audience(site)),
        exp: now + 3600,
        iat: now,
        nbf: None,
        jti: "bench-jti".into(),
        org: "acme".into(),
        kind: PrincipalKind::Device,
        roles: vec!["device".into()],
        perms: vec![],
        mqtt,
    }
}

fn auth(c: &mut Criterion) {
    let site = Site::new("plant-1").expect("site");
    let dir = std::env::temp_dir().join(format!("plantd-edge-bench-auth-{}", std::process::id()));
    let mut g = c.benchmark_group("auth");
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(1));
    for key in [
        SigningKey::generate_ed25519("ed").expect("ed25519 key"),
        SigningKey::generate_es256("es").expect("p-256 key"),
    ] {
        let trust = Trust::new(site.clone(), dir.join(key.kid()));
        trust.set_jwks(jwks_of([&key]).expect("jwks"));
        // The site's owner, as `owner::resolve` sets it: tokens of another
        // organisation are refused.
        let authn =
            Authenticator::new(site.clone(), Some(trust), false).with_org(Some("acme".into()));
        let token = key.sign(&claims(&site)).expect("sign");
        g.bench_function(
            format!("verify token at CONNECT ({:?})", key.algorithm()),
            |b| {
                b.iter(|| {
                    authn
                        .authenticate(Some("dev-1"), Some(black_box(token.as_bytes())))
                        .expect("valid token")
                })
            },
        );
    }
    let key = SigningKey::generate_ed25519("ed").expect("key");
    let trust = Trust::new(site.clone(), dir.join("checks"));
    trust.set_jwks(jwks_of([&key]).expect("jwks"));
    // The site's owner, as `owner::resolve` sets it: tokens of another
    // organisation are refused.
    let authn = Authenticator::new(site.clone(), Some(trust), false).with_org(Some("acme".into()));
    let identity = authn
        .authenticate(
            None,
            Some(key.sign(&claims(&site)).expect("sign").as_bytes()),
        )
        .expect("valid")
        .expect("identity");
    g.bench_function("PUBLISH permission check (compiled grants)", |b| {
        b.iter(|| black_box(identity.can_publish(black_box("plant/line1/press-4/pressure"))))
    });
    let filter = Filter::new("plant/line1/+/temp").expect("filter");
    g.bench_function("SUBSCRIBE permission check (compiled grants)", |b| {
        b.iter(|| black_box(identity.can_subscribe(black_box(&filter))))
    });
    g.finish();
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, auth);
criterion_main!(benches);
