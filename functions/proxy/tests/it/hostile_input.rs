//! Query strings an outside tester sends to make the proxy allocate
//! without bound or panic: extreme, negative and overflowing numbers,
//! huge limits, times at the ends of the range. Each must be a 4xx (or an
//! answer), never a 5xx nor a panic of the request (which `oneshot`
//! would surface as a failed test).

use crate::common;

use axum::http::StatusCode;
use common::{fixture, get};

const MAX: &str = "18446744073709551615";
/// 9999-12-31T23:59:59.999Z, the latest time a query may name.
const YEAR_9999: u64 = plantd_shared::headers::MAX_QUERY_TIME_MS;

#[tokio::test]
async fn extreme_query_parameters_are_refused_or_answered_never_a_failure() {
    let f = fixture().await;
    let js = f.nats.jetstream().await;
    for v in ["1", "2.5", "3"] {
        js.publish("plantd.plant-1.up.line1.temp", v.into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
    let token = f.token(common::ORG, &["*"]);
    let probes = [
        format!("/v1/sites/plant-1/history?filter=%23&limit={MAX}"),
        "/v1/sites/plant-1/history?filter=%23&limit=-1".to_owned(),
        "/v1/sites/plant-1/history?filter=%23&limit=0".to_owned(),
        format!("/v1/sites/plant-1/history?filter=%23&from={MAX}&to={MAX}"),
        format!("/v1/sites/plant-1/history?filter=%23&from=0&to={MAX}&order=asc"),
        "/v1/sites/plant-1/history?filter=%23&from=-5".to_owned(),
        "/v1/sites/plant-1/history?filter=%23&from=9999-12-31T23:59:59Z".to_owned(),
        format!("/v1/sites/plant-1/history?filter=%23&cursor={MAX}"),
        "/v1/sites/plant-1/history?filter=%23&cursor=%FF%FE".to_owned(),
        format!("/v1/sites/plant-1/series?topic=line1/temp&buckets={MAX}"),
        format!("/v1/sites/plant-1/series?topic=line1/temp&from=0&to={MAX}"),
        format!("/v1/sites/plant-1/series?topic=line1/temp&from={MAX}&to={MAX}"),
        format!("/v1/sites/plant-1/series?topic=line1/temp&from=0&to={MAX}&agg=lttb&buckets=10000"),
        format!(
            "/v1/sites/plant-1/series?topic=line1/temp&from=0&to={YEAR_9999}&agg=lttb&buckets=10000"
        ),
        format!("/v1/sites/plant-1/series?topic=line1/temp&from=0&to={YEAR_9999}&buckets=10000"),
        format!("/v1/sites/plant-1/history?filter=%23&from=0&to={YEAR_9999}&order=asc"),
        format!("/v1/sites/plant-1/aggregates?from=0&to={YEAR_9999}"),
        format!("/v1/logs/stats?site=plant-1&from=0&to={YEAR_9999}&step=1ms"),
        format!("/v1/logs/aggregates?site=plant-1&from=0&to={YEAR_9999}"),
        format!(
            "/v1/sites/plant-1/series?topic=line1/temp&field={}",
            "a.".repeat(5000)
        ),
        format!("/v1/sites/plant-1/aggregates?limit={MAX}"),
        format!("/v1/sites/plant-1/aggregates?from=0&to={MAX}"),
        format!("/v1/sites/plant-1/aggregates?cursor={MAX}"),
        format!("/v1/sites/plant-1/commands?limit={MAX}"),
        "/v1/sites/plant-1/commands?limit=-1".to_owned(),
        format!("/v1/sites/plant-1/commands/{MAX}"),
        "/v1/sites/plant-1/last?topic=line1/temp".to_owned(),
        format!("/v1/logs?site=plant-1&limit={MAX}"),
        format!("/v1/logs?site=plant-1&from=-{MAX}&to={MAX}"),
        "/v1/logs?site=plant-1&from=-9223372036854775808".to_owned(),
        format!("/v1/logs/stats?site=plant-1&from=0&to={MAX}&step=1ms"),
        "/v1/logs/stats?site=plant-1&from=-9223372036854775808&to=9223372036854775807&step=1ms"
            .to_owned(),
        format!("/v1/logs/aggregates?site=plant-1&from=0&to={MAX}&top={MAX}"),
        "/v1/logs/aggregates?site=plant-1&from=-9223372036854775808&to=9223372036854775807"
            .to_owned(),
        format!("/v1/state/scope/key/history?x={}", "y".repeat(10_000)),
    ];
    for uri in &probes {
        eprintln!("probing {uri}");
        let a = get(&f.app, uri, Some(&token)).await;
        eprintln!(
            "  -> {} {}",
            a.status,
            a.json().to_string().chars().take(150).collect::<String>()
        );
        assert!(
            a.status.is_client_error()
                || a.status.is_success()
                || a.status == StatusCode::SERVICE_UNAVAILABLE && uri.starts_with("/v1/logs?")
                || a.status == StatusCode::SERVICE_UNAVAILABLE && uri.starts_with("/v1/logs/stats"),
            "{uri}: {} {}",
            a.status,
            a.json()
        );
    }
    let a = get(
        &f.app,
        &format!("/v1/sites/plant-1/commands/{MAX}"),
        Some(&token),
    )
    .await;
    assert!(a.status.is_client_error() || a.status == StatusCode::METHOD_NOT_ALLOWED);
}
