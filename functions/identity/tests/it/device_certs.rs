//! Registering a device with its client certificate's fingerprint
//! (`certificate_sha256`): the record its site's edge follows appears in
//! `plantd_device_certs` under `<site>.<hex>`, follows the device's active
//! flag, is replaced (rotation) or removed with `PATCH`, and goes with the
//! device; a malformed fingerprint is a 400 naming the field, a
//! certificate registered on the site already a 409 that leaves no device
//! behind.

use crate::common;

use axum::http::StatusCode;
use common::{call, fixture, org_with_admin, root_token};
use plantd_shared::device_certs::{DEVICE_CERTS_BUCKET, DeviceCert, Fingerprint, key};
use plantd_shared::subject::Site;
use serde_json::json;

#[tokio::test]
async fn a_devices_certificate_is_published_for_its_edge_and_follows_the_device() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let acme = org_with_admin(&f, &root, "acme").await;
    common::register_site(&f, "acme", "plant-1").await;
    let fingerprint = Fingerprint::of_der(b"press 1's certificate");
    // OpenSSL's form: upper case with colons.
    let pasted = fingerprint
        .0
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let (s, creds) = call(
        &f.app,
        "POST",
        "/v1/devices",
        Some(&acme),
        Some(
            json!({"name": "press 1", "site": "plant-1", "publish": ["line1/#"],
                    "subscribe": ["cmd/press1/#"], "certificate_sha256": pasted}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{creds}");
    let id = creds["client_id"].as_str().expect("id").to_owned();

    let kv = f
        .nats
        .jetstream()
        .await
        .get_key_value(DEVICE_CERTS_BUCKET)
        .await
        .expect("bucket");
    let k = key(&Site::new("plant-1").expect("site"), &fingerprint);
    let read = |kv: async_nats::jetstream::kv::Store, k: String| async move {
        kv.get(k)
            .await
            .expect("read")
            .map(|v| serde_json::from_slice::<DeviceCert>(&v).expect("record"))
    };
    assert_eq!(
        read(kv.clone(), k.clone()).await,
        Some(DeviceCert {
            device: id.clone(),
            org: "acme".into(),
            site: "plant-1".into(),
            publish: vec!["line1/#".into()],
            subscribe: vec!["cmd/press1/#".into()],
            active: true,
        })
    );

    // The same certificate for a second device on the site: 409, and no
    // second device.
    let (s, v) = call(
        &f.app,
        "POST",
        "/v1/devices",
        Some(&acme),
        Some(json!({"name": "twin", "site": "plant-1", "certificate_sha256": fingerprint.hex()})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (_, list) = call(&f.app, "GET", "/v1/devices", Some(&acme), None).await;
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(1),
        "the refused twin is not left behind: {list}"
    );

    // Not a SHA-256: 400 naming the field.
    let (s, v) = call(
        &f.app,
        "POST",
        "/v1/devices",
        Some(&acme),
        Some(json!({"name": "x", "site": "plant-1", "certificate_sha256": "abc123"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v.to_string().contains("certificate_sha256"), "{v}");

    // Deactivated and activated: the record follows.
    let uri = format!("/v1/devices/{id}");
    let (s, v) = call(
        &f.app,
        "PATCH",
        &uri,
        Some(&acme),
        Some(json!({"active": false})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        read(kv.clone(), k.clone()).await.map(|r| r.active),
        Some(false)
    );
    call(
        &f.app,
        "PATCH",
        &uri,
        Some(&acme),
        Some(json!({"active": true})),
    )
    .await;
    assert_eq!(
        read(kv.clone(), k.clone()).await.map(|r| r.active),
        Some(true)
    );

    // Rotated: the new certificate's record appears, the old one goes.
    let renewed = Fingerprint::of_der(b"press 1's renewed certificate");
    let k2 = key(&Site::new("plant-1").expect("site"), &renewed);
    let (s, v) = call(
        &f.app,
        "PATCH",
        &uri,
        Some(&acme),
        Some(json!({"certificate_sha256": renewed.hex()})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(read(kv.clone(), k.clone()).await, None, "the old one goes");
    assert_eq!(
        read(kv.clone(), k2.clone()).await.map(|r| r.device),
        Some(id.clone())
    );
    let (s, v) = call(
        &f.app,
        "PATCH",
        &uri,
        Some(&acme),
        Some(json!({"certificate_sha256": "not a fingerprint"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(read(kv.clone(), k2.clone()).await.is_some(), "unchanged");
    // "" removes it.
    let (s, v) = call(
        &f.app,
        "PATCH",
        &uri,
        Some(&acme),
        Some(json!({"certificate_sha256": ""})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(read(kv.clone(), k2.clone()).await, None);

    // Deleted with a certificate: the record goes (the edge closes its
    // connections).
    call(
        &f.app,
        "PATCH",
        &uri,
        Some(&acme),
        Some(json!({"certificate_sha256": renewed.hex()})),
    )
    .await;
    assert!(read(kv.clone(), k2.clone()).await.is_some());
    assert_eq!(
        call(&f.app, "DELETE", &uri, Some(&acme), None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(read(kv, k2).await, None);
}
