//! NATS server URLs as plantd takes them in config: one URL, or a cluster's
//! nodes separated by commas (`tls://edge:pw@n1:4222,tls://n2:4222`), with
//! an optional user and password in a URL.
//!
//! async-nats takes a list of servers and fails over between them, but one
//! string with commas is no URL to it ("invalid port number"), and it does
//! not read credentials from a URL. Every process that connects to NATS —
//! the edge's uplink and owner lookups, the functions, the trigger's
//! forwarder, `plantd up` — goes through [`connect`] (or [`server_urls`]
//! and [`url_credentials`]) so a cluster URL list works everywhere, and
//! logs and errors show [`redacted`] URLs only.

/// The servers of `urls`: one URL, or several separated by commas, trimmed,
/// empty entries dropped.
pub fn server_urls(urls: &str) -> Vec<String> {
    urls.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `options` with the user and password of the first of `urls` that
/// carries them (`tls://user:password@host:4222`, letters and digits or
/// percent-encoded as in any URL); without any, `options` as they were.
pub fn url_credentials(
    options: async_nats::ConnectOptions,
    urls: &str,
) -> async_nats::ConnectOptions {
    for url in server_urls(urls) {
        let Ok(addr) = url.parse::<async_nats::ServerAddr>() else {
            continue;
        };
        if let (Some(user), Some(password)) = (addr.username(), addr.password()) {
            return options.user_and_password(user.to_owned(), password.to_owned());
        }
    }
    options
}

/// `urls` with every password replaced by `***`, for logs and errors.
pub fn redacted(urls: &str) -> String {
    urls.split(',')
        .map(|u| match (u.find("://"), u.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let user = u[scheme + 3..at].split(':').next().unwrap_or_default();
                format!("{}{user}:***{}", &u[..scheme + 3], &u[at..])
            }
            _ => u.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Connects to `urls` (one URL or a comma-separated list, failing over
/// between them) with `options` and any credentials in the URLs.
///
/// # Errors
/// async-nats' connect error (name the servers with [`redacted`]).
pub async fn connect(
    urls: &str,
    options: async_nats::ConnectOptions,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    url_credentials(options, urls)
        .connect(server_urls(urls))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_urls_is_split_and_its_passwords_never_printed() {
        let urls = " tls://edge:s3cret@a:4222, ,tls://b:4222";
        assert_eq!(
            server_urls(urls),
            ["tls://edge:s3cret@a:4222", "tls://b:4222"]
        );
        assert_eq!(
            redacted("tls://edge:s3cret@a:4222,tls://b:4222"),
            "tls://edge:***@a:4222,tls://b:4222"
        );
        assert_eq!(redacted("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }
}
