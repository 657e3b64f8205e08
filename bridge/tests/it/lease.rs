//! The site lease against a real nats-server: one live journal per site,
//! and a dead holder's lease taken over at once.

use plantd_bridge::{LeaseState, SiteLease};
use plantd_shared::lease::LeaseLife;
use plantd_shared::streams::{self, Settings};
use plantd_shared::subject::Site;
use plantd_testkit::Nats;
use tokio::sync::oneshot;

fn site() -> Site {
    Site::new("plant-1").expect("site")
}

struct Holder {
    lease: std::sync::Arc<SiteLease>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn hold(nats: &Nats, journal: &str, who: &str) -> (Holder, LeaseState) {
    let lease = SiteLease::new(
        nats.client().await,
        site(),
        journal.into(),
        who.into(),
        vec![LeaseLife {
            id: journal.into(),
            first_seq: 1,
        }],
    );
    let pings = lease.listen().await.expect("listen");
    let state = lease.confirm().await.expect("confirm");
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(lease.clone().run(pings, async move {
        let _ = rx.await;
    }));
    (Holder { lease, stop, task }, state)
}

impl Holder {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("lease task");
        // Its connection goes with it (the test client is dropped).
        drop(self.lease);
    }
}

#[tokio::test]
async fn a_live_holder_keeps_the_site_and_a_gone_one_is_replaced_at_once() {
    let nats = Nats::start().await;
    streams::ensure(&nats.jetstream().await, &Settings::default())
        .await
        .expect("streams");
    let (first, state) = hold(&nats, "aaaaaaaaaaaaaaaa", "edge one").await;
    assert_eq!(state, LeaseState::Held);
    // Renewing our own lease keeps it.
    assert_eq!(
        first.lease.confirm().await.expect("renew"),
        LeaseState::Held
    );

    let (second, state) = hold(&nats, "bbbbbbbbbbbbbbbb", "edge two").await;
    let LeaseState::Refused(why) = state else {
        panic!("a second live journal for the site must be refused: {state:?}");
    };
    assert!(
        why.contains("aaaaaaaaaaaaaaaa") && why.contains("edge one"),
        "{why}"
    );

    // The first holder goes away: the second takes over without waiting
    // for the lease to expire.
    first.stop().await;
    assert_eq!(
        second.lease.confirm().await.expect("take over"),
        LeaseState::Held
    );
    second.stop().await;
}
