//! The journal as the edge uses it: append, read back in order, survive a
//! restart, repair a torn tail, and hold to its size limit by blocking or
//! dropping.

use std::fs::OpenOptions;
use std::time::Duration;

use bytes::Bytes;
use plantd_journal::{FsyncPolicy, Journal, Options, OverflowPolicy};

fn payload(i: u64) -> Bytes {
    Bytes::from(format!("measurement-{i:08}"))
}

fn opts() -> Options {
    Options::default()
}

async fn append_n(j: &Journal, from: u64, n: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    for i in from..from + n {
        seqs.push(j.append(payload(i)).await.expect("append"));
    }
    seqs
}

#[tokio::test]
async fn appends_are_numbered_and_read_back_in_order() {
    let dir = tempfile::tempdir().expect("tmp");
    let (j, rec) = Journal::open(dir.path(), opts()).expect("open");
    assert_eq!(rec.records, 0);
    let seqs = append_n(&j, 0, 100).await;
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
    assert_eq!(j.durable(), 100);
    let mut r = j.reader(1);
    for i in 0..100u64 {
        let rec = r.next().await.expect("record");
        assert_eq!(rec.seq, i + 1);
        assert_eq!(rec.payload, payload(i));
    }
    assert!(
        r.try_next().expect("read").is_none(),
        "nothing beyond the end"
    );
    // A reader waits for the next record instead of failing.
    let j2 = j.clone();
    let waiter = tokio::spawn(async move { r.next().await.map(|rec| rec.seq) });
    j2.append(payload(100)).await.expect("append");
    assert_eq!(waiter.await.expect("join").expect("next"), 101);
    j.close().await.expect("close");
}

#[tokio::test]
async fn records_and_cursor_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        let (j, _) = Journal::open(dir.path(), opts()).expect("open");
        append_n(&j, 0, 50).await;
        j.ack(20);
        j.close().await.expect("close");
    }
    let (j, rec) = Journal::open(dir.path(), opts()).expect("reopen");
    assert_eq!(rec.records, 50);
    assert_eq!(rec.last_seq, 50);
    assert_eq!(rec.acked, 20);
    assert!(!rec.repaired());
    let mut r = j.reader_from_cursor();
    assert_eq!(
        r.next().await.expect("record").seq,
        21,
        "resend starts after the cursor"
    );
    assert_eq!(
        j.append(payload(50)).await.expect("append"),
        51,
        "numbering continues"
    );
    j.close().await.expect("close");
}

#[tokio::test]
async fn a_torn_last_record_is_cut_and_everything_before_it_kept() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        let (j, _) = Journal::open(dir.path(), opts()).expect("open");
        append_n(&j, 0, 10).await;
        j.close().await.expect("close");
    }
    // Cut the last record in half, as a power cut mid-write would.
    let seg = std::fs::read_dir(dir.path())
        .expect("ls")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .expect("a segment");
    let len = std::fs::metadata(&seg).expect("meta").len();
    let f = OpenOptions::new().write(true).open(&seg).expect("open seg");
    f.set_len(len - 7).expect("truncate");
    drop(f);

    let (j, rec) = Journal::open(dir.path(), opts()).expect("recover");
    assert_eq!(rec.records, 9, "every complete record kept");
    assert!(rec.truncated_bytes > 0, "the cut is reported: {rec:?}");
    assert!(!rec.corrupt, "a short tail is a torn write, not corruption");
    assert_eq!(rec.truncated_segments, vec![seg.clone()]);
    let mut r = j.reader(1);
    for i in 0..9u64 {
        assert_eq!(r.next().await.expect("record").payload, payload(i));
    }
    assert_eq!(j.append(payload(99)).await.expect("append"), 10);
    j.close().await.expect("close");
}

#[tokio::test]
async fn a_flipped_bit_in_the_tail_is_detected_as_corruption() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        let (j, _) = Journal::open(dir.path(), opts()).expect("open");
        append_n(&j, 0, 5).await;
        j.close().await.expect("close");
    }
    let seg = std::fs::read_dir(dir.path())
        .expect("ls")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .expect("a segment");
    let mut bytes = std::fs::read(&seg).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&seg, bytes).expect("write");
    let (j, rec) = Journal::open(dir.path(), opts()).expect("recover");
    assert_eq!(rec.records, 4);
    assert!(rec.corrupt);
    j.close().await.expect("close");
}

#[tokio::test]
async fn segments_rotate_and_acknowledged_ones_are_deleted() {
    let dir = tempfile::tempdir().expect("tmp");
    let o = Options {
        segment_bytes: 4096,
        max_bytes: 0,
        ..opts()
    };
    let (j, _) = Journal::open(dir.path(), o).expect("open");
    append_n(&j, 0, 1000).await;
    let before = j.stats();
    assert!(before.segments > 5, "{before:?}");
    let mut r = j.reader(1);
    for i in 0..1000u64 {
        assert_eq!(
            r.next().await.expect("record").payload,
            payload(i),
            "across segments"
        );
    }
    j.ack(1000);
    j.close().await.expect("close");
    let (j, rec) = Journal::open(
        dir.path(),
        Options {
            segment_bytes: 4096,
            max_bytes: 0,
            ..opts()
        },
    )
    .expect("reopen");
    assert!(rec.segments <= 2, "acknowledged segments deleted: {rec:?}");
    assert_eq!(rec.acked, 1000);
    assert_eq!(j.append(payload(0)).await.expect("append"), 1001);
    j.close().await.expect("close");
}

#[tokio::test]
async fn full_journal_blocks_publishers_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let o = Options {
        max_bytes: 64 * 1024,
        overflow: OverflowPolicy::Block,
        ..opts()
    };
    let (j, _) = Journal::open(dir.path(), o).expect("open");
    // Fill it: ~45-byte records, 64 KiB limit.
    let mut appended = 0u64;
    loop {
        let fut = j.append(payload(appended));
        match tokio::time::timeout(Duration::from_millis(300), fut).await {
            Ok(r) => {
                r.expect("append");
                appended += 1;
            }
            Err(_) => break, // held back: the journal is full
        }
        assert!(appended < 10_000, "a 64 KiB journal must fill up");
    }
    assert!(j.stats().blocked, "{:?}", j.stats());
    // The uplink catches up: read and acknowledge, and publishers resume.
    let mut r = j.reader(1);
    let j2 = j.clone();
    let more = tokio::spawn(async move {
        let mut seqs = Vec::new();
        for i in 0..200u64 {
            seqs.push(
                j2.append(payload(100_000 + i))
                    .await
                    .expect("append after room"),
            );
        }
        seqs
    });
    let mut seen = 0u64;
    while seen < appended + 200 {
        let rec = r.next().await.expect("record");
        seen += 1;
        assert_eq!(rec.seq, seen, "no gaps: nothing dropped");
        j.ack(rec.seq);
    }
    let seqs = more.await.expect("join");
    assert_eq!(seqs.len(), 200);
    let s = j.stats();
    assert_eq!(s.dropped_overflow, 0);
    assert!(!s.blocked);
    j.close().await.expect("close");
}

#[tokio::test]
async fn drop_oldest_drops_and_counts() {
    let dir = tempfile::tempdir().expect("tmp");
    let o = Options {
        max_bytes: 64 * 1024,
        overflow: OverflowPolicy::DropOldest,
        ..opts()
    };
    let (j, _) = Journal::open(dir.path(), o).expect("open");
    let n = 5000u64;
    append_n(&j, 0, n).await;
    let s = j.stats();
    assert!(s.dropped_overflow > 0, "{s:?}");
    assert!(s.bytes <= 64 * 1024, "{s:?}");
    let mut r = j.reader(1);
    let mut read = 0u64;
    while let Some(rec) = r.try_next().expect("read") {
        read += 1;
        assert_eq!(rec.payload, payload(rec.seq - 1), "what is kept is intact");
    }
    assert_eq!(
        read + r.skipped(),
        n,
        "every record is either kept or counted as dropped"
    );
    assert_eq!(r.skipped(), s.dropped_overflow);
    j.close().await.expect("close");
}

#[tokio::test]
async fn batch_policy_shares_fsyncs_between_concurrent_publishers() {
    let dir = tempfile::tempdir().expect("tmp");
    let (j, _) = Journal::open(dir.path(), opts()).expect("open");
    let tasks: Vec<_> = (0..200u64)
        .map(|i| {
            let j = j.clone();
            tokio::spawn(async move { j.append(payload(i)).await })
        })
        .collect();
    for t in tasks {
        t.await.expect("join").expect("append");
    }
    let s = j.stats();
    assert_eq!(s.appends, 200);
    assert!(s.fsyncs >= 1 && s.fsyncs < 200, "group commit: {s:?}");
    j.close().await.expect("close");
}

#[tokio::test]
async fn never_policy_does_not_fsync_until_close() {
    let dir = tempfile::tempdir().expect("tmp");
    let (j, _) = Journal::open(
        dir.path(),
        Options {
            fsync: FsyncPolicy::Never,
            ..opts()
        },
    )
    .expect("open");
    append_n(&j, 0, 50).await;
    assert_eq!(j.stats().fsyncs, 0);
    assert_eq!(
        j.durable(),
        50,
        "durable means written to the OS under never"
    );
    j.close().await.expect("close");
    let (_, rec) = Journal::open(dir.path(), opts()).expect("reopen");
    assert_eq!(rec.records, 50);
}

#[tokio::test]
async fn oversized_records_are_refused_not_truncated() {
    let dir = tempfile::tempdir().expect("tmp");
    let (j, _) = Journal::open(
        dir.path(),
        Options {
            max_record: 1024,
            ..opts()
        },
    )
    .expect("open");
    let err = j
        .append(Bytes::from(vec![0u8; 2048]))
        .await
        .expect_err("too large");
    assert!(err.to_string().contains("2048"), "{err}");
    assert_eq!(j.append(payload(1)).await.expect("small ok"), 1);
    j.close().await.expect("close");
}

#[tokio::test]
async fn appends_after_close_fail_cleanly() {
    let dir = tempfile::tempdir().expect("tmp");
    let (j, _) = Journal::open(dir.path(), opts()).expect("open");
    let other = j.clone();
    j.close().await.expect("close");
    assert!(other.append(payload(0)).await.is_err());
}

#[tokio::test]
async fn enqueued_records_become_durable_together() {
    let dir = tempfile::tempdir().expect("tmp");
    let (j, _) = Journal::open(dir.path(), opts()).expect("open");
    let mut pending = Vec::new();
    for i in 0..50 {
        pending.push(j.enqueue(payload(i)).await.expect("enqueue"));
    }
    let mut seqs = Vec::new();
    for p in pending {
        seqs.push(p.await.expect("durable"));
    }
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    assert!(
        j.stats().fsyncs < 50,
        "one fsync covers many: {:?}",
        j.stats()
    );
    j.close().await.expect("close");
}

/// A data directory wiped while the journal runs (the segment files
/// deleted behind its back): a reader gets an error naming the missing
/// record instead of spinning on the file forever (it used to retry in a
/// tight loop, which also kept the process from exiting on SIGTERM).
#[tokio::test]
async fn a_segment_deleted_behind_the_journals_back_is_an_error_not_a_spin() {
    let dir = tempfile::tempdir().expect("tmp");
    let (j, _) = Journal::open(dir.path(), opts()).expect("open");
    append_n(&j, 0, 10).await;
    for entry in std::fs::read_dir(dir.path()).expect("list") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "seg") {
            std::fs::remove_file(&path).expect("delete the segment");
        }
    }
    let mut r = j.reader(1);
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), r.next())
        .await
        .expect("the reader answers instead of spinning");
    let e = got.expect_err("the records are gone");
    assert!(e.to_string().contains("record 1 is gone"), "{e}");
}
