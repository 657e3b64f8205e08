//! `GET /v1/sites/{site}/series` over a real nats-server: a topic's
//! readings in `PLANTD_TELEMETRY` downsampled into min/max/avg buckets or
//! LTTB points, checked against a reference the test computes from the
//! stored messages themselves (their stream times); non-numeric payloads
//! counted and skipped; JSON field paths; another organisation's site
//! refused; every bad parameter named in the 400.

use crate::common;

use async_nats::jetstream::Context;
use axum::http::StatusCode;
use common::{fixture, get};
use futures::future::try_join_all;
use plantd_shared::streams::TELEMETRY;
use serde_json::Value;

/// Publishes `payloads` on `subject` (pipelined) and returns each stored
/// message's stream time (ms), in order.
async fn publish_all(js: &Context, subject: &str, payloads: &[String]) -> Vec<u64> {
    let mut acks = Vec::with_capacity(payloads.len());
    for p in payloads {
        acks.push(
            js.publish(subject.to_owned(), p.clone().into())
                .await
                .expect("publish"),
        );
    }
    let seqs: Vec<u64> = try_join_all(acks.into_iter().map(std::future::IntoFuture::into_future))
        .await
        .expect("acks")
        .into_iter()
        .map(|a| a.sequence)
        .collect();
    let stream = js.get_stream(TELEMETRY).await.expect("stream");
    let mut times = Vec::with_capacity(seqs.len());
    for seq in seqs {
        let m = stream.direct_get(seq).await.expect("stored");
        times.push(u64::try_from(m.time.unix_timestamp_nanos() / 1_000_000).expect("ms"));
    }
    times
}

/// The reference: per bucket of `[from, to]` cut into `n`, the readings.
fn reference(times: &[u64], values: &[Option<f64>], from: u64, to: u64, n: u64) -> Vec<Value> {
    let span = to - from + 1;
    let n = n.min(span);
    let width = span.div_ceil(n);
    let mut out = Vec::new();
    for i in 0..span.div_ceil(width) {
        let lo = from + i * width;
        let vs: Vec<f64> = times
            .iter()
            .zip(values)
            .filter(|(t, _)| **t >= lo && **t < lo + width && **t <= to)
            .filter_map(|(_, v)| *v)
            .collect();
        if vs.is_empty() {
            continue;
        }
        let sum: f64 = vs.iter().sum();
        out.push(serde_json::json!({
            "t": lo,
            "count": vs.len(),
            "min": vs.iter().copied().fold(f64::INFINITY, f64::min),
            "max": vs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            "avg": sum / vs.len() as f64,
            "first": vs[0],
            "last": vs[vs.len() - 1],
        }));
    }
    out
}

/// The answer's buckets equal the reference's, one by one.
fn same_buckets(got: &Value, want: &[Value]) {
    let got = got.as_array().expect("buckets");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        // serde_json's default float parsing may be off in the last digit
        // (no `float_roundtrip`): the mean is compared to 1e-12.
        let (ga, wa) = (g["avg"].as_f64(), w["avg"].as_f64());
        assert!(
            ga.zip(wa)
                .is_some_and(|(a, b)| (a - b).abs() <= 1e-12 * b.abs().max(1.0)),
            "bucket {i}: avg {ga:?} != {wa:?}"
        );
        let strip = |v: &Value| {
            let mut v = v.clone();
            v.as_object_mut().map(|o| o.remove("avg"));
            v
        };
        assert_eq!(strip(g), strip(w), "bucket {i}");
    }
    assert_eq!(got.len(), want.len(), "buckets");
}

#[tokio::test]
async fn buckets_over_known_data_count_and_skip_non_numbers() {
    let f = fixture().await;
    let token = f.token("acme", &["telemetry:plant-1:read"]);
    let js = f.nats.jetstream().await;
    // 1,500 readings, one in 50 is text a chart cannot draw.
    let values: Vec<Option<f64>> = (0..1500)
        .map(|i| (i % 50 != 7).then(|| f64::from((i * 37) % 101) - 50.5))
        .collect();
    let payloads: Vec<String> = values
        .iter()
        .map(|v| v.map_or_else(|| "offline".to_owned(), |v| v.to_string()))
        .collect();
    let times = publish_all(&js, "plantd.plant-1.up.line1.temp", &payloads).await;
    // Another topic and another site on the same stream are not read.
    publish_all(&js, "plantd.plant-1.up.line2.temp", &["1000".to_owned()]).await;
    publish_all(&js, "plantd.plant-2.up.line1.temp", &["1000".to_owned()]).await;
    let (from, to) = (times[0], times[times.len() - 1]);

    let uri = format!("/v1/sites/plant-1/series?topic=line1/temp&from={from}&to={to}&buckets=7");
    let a = get(&f.app, &uri, Some(&token)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json());
    let body = a.json();
    assert_eq!(body["read"], 1500);
    assert_eq!(body["skipped"], 30);
    assert_eq!(body["agg"], "minmaxavg");
    assert_eq!(body["from"], from);
    assert_eq!(body["to"], to);
    same_buckets(&body["buckets"], &reference(&times, &values, from, to, 7));
    assert!(body.get("points").is_none());

    // Without from/to: from the topic's first message to now, same totals.
    let all = get(
        &f.app,
        "/v1/sites/plant-1/series?topic=line1/temp",
        Some(&token),
    )
    .await
    .json();
    assert_eq!(all["from"], from);
    assert_eq!(all["read"], 1500);
    let counted: u64 = all["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .map(|b| b["count"].as_u64().expect("count"))
        .sum();
    assert_eq!(counted, 1470);

    // A sub-range: only the readings stored in it.
    let (lo, hi) = (times[500], times[999]);
    let sub = get(
        &f.app,
        &format!("/v1/sites/plant-1/series?topic=line1/temp&from={lo}&to={hi}&buckets=3"),
        Some(&token),
    )
    .await
    .json();
    let inside = times.iter().filter(|t| **t >= lo && **t <= hi).count();
    assert_eq!(sub["read"], inside);
    same_buckets(&sub["buckets"], &reference(&times, &values, lo, hi, 3));

    // Readings stored after a request are in the next one (the proxy
    // keeps the topic's readings and reads only what is new).
    let more = publish_all(&js, "plantd.plant-1.up.line1.temp", &["1e3".to_owned()]).await;
    let after = get(
        &f.app,
        "/v1/sites/plant-1/series?topic=line1/temp&agg=lttb",
        Some(&token),
    )
    .await
    .json();
    assert_eq!(after["read"], 1501);
    let points = after["points"].as_array().expect("points");
    assert_eq!(
        points.last(),
        Some(&serde_json::json!({"t": more[0], "v": 1000.0}))
    );
    // An earlier start than any request before: read from there again.
    let earlier = get(
        &f.app,
        &format!(
            "/v1/sites/plant-1/series?topic=line1/temp&from={}",
            from - 60_000
        ),
        Some(&token),
    )
    .await
    .json();
    assert_eq!(earlier["read"], 1501);

    // A topic with nothing stored: an empty series, not an error.
    let none = get(
        &f.app,
        "/v1/sites/plant-1/series?topic=nothing/here",
        Some(&token),
    )
    .await;
    assert_eq!(none.status, StatusCode::OK);
    assert_eq!(none.json()["buckets"], serde_json::json!([]));
    assert_eq!(none.json()["read"], 0);
}

#[tokio::test]
async fn lttb_keeps_the_first_the_last_and_the_spikes() {
    let f = fixture().await;
    let token = f.token("acme", &["telemetry:plant-1:read"]);
    let js = f.nats.jetstream().await;
    let values: Vec<f64> = (0..3000)
        .map(|i| match i {
            1234 => 250.0,
            2345 => -120.0,
            _ => 20.0 + f64::from(i % 3) * 0.1,
        })
        .collect();
    let payloads: Vec<String> = values.iter().map(ToString::to_string).collect();
    let times = publish_all(&js, "plantd.plant-1.up.press.bar", &payloads).await;
    let (from, to) = (times[0], times[times.len() - 1]);
    let a = get(
        &f.app,
        &format!(
            "/v1/sites/plant-1/series?topic=press/bar&from={from}&to={to}&buckets=40&agg=lttb"
        ),
        Some(&token),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json());
    let body = a.json();
    assert_eq!(body["agg"], "lttb");
    assert!(body.get("buckets").is_none());
    let points: Vec<(u64, f64)> = body["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| (p["t"].as_u64().expect("t"), p["v"].as_f64().expect("v")))
        .collect();
    assert!(points.len() <= 42, "{} points", points.len());
    assert!(points.len() >= 10, "{} points", points.len());
    assert_eq!(points[0], (times[0], values[0]));
    assert_eq!(points[points.len() - 1], (to, values[values.len() - 1]));
    assert!(points.contains(&(times[1234], 250.0)), "the spike");
    assert!(points.contains(&(times[2345], -120.0)), "the dip");
    // Every point is a stored reading, in time order.
    for (t, v) in &points {
        assert!(
            times.iter().zip(&values).any(|(tt, vv)| tt == t && vv == v),
            "({t}, {v}) is not a reading"
        );
    }
    assert!(points.windows(2).all(|w| w[0].0 <= w[1].0));
}

#[tokio::test]
async fn a_json_field_path_picks_the_number() {
    let f = fixture().await;
    let token = f.token("acme", &["telemetry:plant-1:read"]);
    let js = f.nats.jetstream().await;
    let mut payloads: Vec<String> = (0..100)
        .map(|i| {
            format!(
                r#"{{"status": "ok", "m": {{"temp": {i}, "unit": "C"}}, "v": [1, {}]}}"#,
                i * 2
            )
        })
        .collect();
    payloads.push(r#"{"m": {"temp": "hot"}}"#.to_owned());
    payloads.push("not json".to_owned());
    let times = publish_all(&js, "plantd.plant-1.up.oven.1", &payloads).await;
    let (from, to) = (times[0], times[times.len() - 1]);
    for (field, sum) in [("m.temp", 4950.0), ("v.1", 9900.0)] {
        let a = get(
            &f.app,
            &format!(
                "/v1/sites/plant-1/series?topic=oven/1&from={from}&to={to}&buckets=1&field={field}"
            ),
            Some(&token),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.json());
        let body = a.json();
        assert_eq!(body["field"], field);
        assert_eq!(body["read"], 102);
        assert_eq!(body["skipped"], 2);
        let b = &body["buckets"][0];
        assert_eq!(b["count"], 100);
        assert_eq!(b["avg"].as_f64(), Some(sum / 100.0));
        assert_eq!(b["min"].as_f64(), Some(0.0));
    }
    // Without a field, JSON documents are not numbers.
    let whole = get(
        &f.app,
        &format!("/v1/sites/plant-1/series?topic=oven/1&from={from}&to={to}"),
        Some(&token),
    )
    .await
    .json();
    assert_eq!(whole["skipped"], 102);
    assert_eq!(whole["buckets"], serde_json::json!([]));
}

#[tokio::test]
async fn another_organisations_site_is_refused() {
    let f = fixture().await;
    f.register_site("globex", "globex-1").await;
    let js = f.nats.jetstream().await;
    publish_all(&js, "plantd.globex-1.up.line1.temp", &["1".to_owned()]).await;
    let acme = f.token("acme", &["telemetry:*:read"]);
    let a = get(
        &f.app,
        "/v1/sites/globex-1/series?topic=line1/temp",
        Some(&acme),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.json());
    assert!(a.json().get("buckets").is_none());
    let unknown = get(&f.app, "/v1/sites/nowhere/series?topic=t", Some(&acme)).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let no_perm = f.token("acme", &["commands:plant-1:send"]);
    let a = get(&f.app, "/v1/sites/plant-1/series?topic=t", Some(&no_perm)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let globex = f.token("globex", &["telemetry:*:read"]);
    let own = get(
        &f.app,
        "/v1/sites/globex-1/series?topic=line1/temp",
        Some(&globex),
    )
    .await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.json());
    assert_eq!(own.json()["read"], 1);
}

#[tokio::test]
async fn bad_parameters_are_named_in_the_400() {
    let f = fixture().await;
    let token = f.token("acme", &["telemetry:plant-1:read"]);
    for (query, named) in [
        ("topic=t&buckets=0", "buckets"),
        ("topic=t&buckets=10001", "buckets"),
        ("topic=t&buckets=many", "buckets"),
        ("topic=t&agg=median", "agg"),
        ("topic=t&field=a..b", "field"),
        ("topic=t&from=yesterday", "from"),
        ("topic=t&to=soon", "to"),
        ("topic=t&from=2000&to=1000", "from"),
        ("topic=line1/%2B/temp", "topic"),
        ("buckets=10", "topic"),
        ("topic=t&bucket=10", "bucket"),
    ] {
        let a = get(
            &f.app,
            &format!("/v1/sites/plant-1/series?{query}"),
            Some(&token),
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{query}: {}", a.json());
        let message = a.json()["message"].as_str().unwrap_or_default().to_owned();
        assert!(
            message.contains(named),
            "{query}: {message:?} does not name {named}"
        );
    }
}
