//! A state-backed job: a counter in scoped state that any number of copies
//! of this program can increment at once without losing a step — each
//! write carries the ETag it read (`If-Match`), and a 409 means "someone
//! else wrote first: read again".
//!
//! ```text
//! PLANTD_URL=… PLANTD_EMAIL=… PLANTD_PASSWORD=… \
//!   cargo run -p plantd-client --example state_job -- jobs counter 10
//! ```

use plantd_client::proxy::{params, types};
use plantd_client::{Error, Plantd, RawBody};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let env = |name: &str| std::env::var(name).map_err(|_| Error::Invalid(format!("set {name}")));
    let mut args = std::env::args().skip(1);
    let scope = args.next().unwrap_or_else(|| "jobs".to_owned());
    let key = args.next().unwrap_or_else(|| "counter".to_owned());
    let steps: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(10);
    let plantd = Plantd::login(
        &env("PLANTD_URL")?,
        &env("PLANTD_EMAIL")?,
        env("PLANTD_PASSWORD")?,
    )
    .await?;
    match plantd
        .rest()
        .post_state_scopes(&types::NewScope {
            scope: scope.clone(),
        })
        .await
    {
        Ok(_) => {}
        Err(e) if e.is_conflict() => {} // it exists
        Err(e) => return Err(e),
    }
    let mut conflicts = 0;
    for _ in 0..steps {
        loop {
            let current = plantd.get_state::<u64>(&scope, &key).await?;
            let written = match &current {
                Some(v) => plantd
                    .put_state(&scope, &key, &(v.value + 1), Some(&v.etag))
                    .await
                    .map(drop),
                // Created only if still absent (`If-None-Match: *`).
                None => {
                    let only_if_absent = params::PutStateScopeKeyParams {
                        if_none_match: Some("*".to_owned()),
                        ..Default::default()
                    };
                    plantd
                        .rest()
                        .put_state_scope_key(&scope, &key, &only_if_absent, RawBody::json(&1u64)?)
                        .await
                        .map(drop)
                }
            };
            match written {
                Ok(_) => break,
                Err(e) if e.is_conflict() => conflicts += 1,
                Err(e) => return Err(e),
            }
        }
    }
    let last = plantd
        .get_state::<u64>(&scope, &key)
        .await?
        .map_or(0, |v| v.value);
    println!("{scope}/{key} = {last} ({conflicts} conflicts retried)");
    Ok(())
}
