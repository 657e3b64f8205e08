//! The I/O and back-pressure loop: one readiness future for both
//! directions, reads decoded in batches, publications handed to the router
//! once per read, writes flushed as soon as they are ready, and reading
//! paused while the write buffer is above its high water mark or too many
//! acknowledgements are outstanding. No timer: keep-alive is checked
//! broker-wide (`keepalive.rs`); no shutdown signal: the router tells
//! every link through its mailbox.

use std::io::ErrorKind;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Poll;

use bytes::{Buf, BytesMut};
use tokio::io::Interest;
use tracing::warn;

use super::{DRAIN_BATCH, Exit, HIGH_WATER, KEEP_WBUF, Link, Socket, Step, YIELD_AFTER};
use crate::protocol;
use crate::router::RouterCmd;

impl Link {
    /// Writes as much of the write buffer as the socket takes now.
    pub(super) fn flush<S: Socket>(&mut self, stream: &S) -> Result<(), Exit> {
        while !self.wbuf.is_empty() {
            match stream.try_write(&self.wbuf) {
                Ok(n) => {
                    self.wbuf.advance(n);
                    self.ctx.metrics.bytes_out.fetch_add(n as u64, Relaxed);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => return Err(Exit::Closed),
            }
        }
        if self.wbuf.is_empty() && self.wbuf.capacity() > KEEP_WBUF {
            self.wbuf = BytesMut::new();
        }
        Ok(())
    }

    /// Serves the connection until it ends. Keep-alive is not timed here:
    /// each read stamps the mailbox and the broker-wide checker
    /// ([`super::KeepAlive`]) closes a silent link through the mailbox.
    pub(super) async fn run<S: Socket>(&mut self, stream: &S, mut rbuf: BytesMut) -> Exit {
        let max_packet = self.ctx.config.limits.max_packet_size as usize;
        let max_pending = usize::from(self.ctx.config.limits.max_inflight);
        let mailbox = self.mailbox.clone();
        // Bytes from a previous read (the handshake) are processed first.
        let mut got_input = !rbuf.is_empty();
        loop {
            if got_input {
                got_input = false;
                let before = self.received;
                // Boxed: its state exists only while input is processed, so
                // an idle connection's task stays small.
                if let Some(exit) = Box::pin(self.process_input(&mut rbuf, max_packet)).await {
                    return exit;
                }
                if rbuf.is_empty() {
                    // Idle connections hold no read buffer.
                    rbuf = BytesMut::new();
                }
                // A publisher that always has input would otherwise keep
                // its worker thread and starve the links that deliver: give
                // them a turn after a read that carried a burst (the coop
                // budget, spent by each send to the router, bounds the rest).
                // A read of a few publishes on a TCP socket does not yield:
                // a yield queues this task behind the others and wakes the
                // other worker thread to steal it — a futex wake and a
                // context switch for every lone message, which doubled the
                // broker's CPU per ping-pong round trip. Bridged sockets
                // (WebSocket) still yield after every such read: their task
                // also runs the bridge. TLS is not bridged any more; the
                // stall that yield once hid was a missing wake-up (decrypted
                // bytes left inside the TLS session after the TCP socket was
                // drained), which `TlsSocket::ready` now reports
                // (docs/decisions/0034-edge-tls-in-link.md).
                let publishes = self.received.wrapping_sub(before);
                if publishes > 0 && (S::BRIDGED || u64::from(publishes) >= YIELD_AFTER) {
                    tokio::task::yield_now().await;
                }
            }
            // Control first (a SUBACK goes out before the retained messages
            // that follow it), then deliveries, then write what we can.
            let mut ctl = self
                .scratch
                .as_mut()
                .map(|s| std::mem::take(&mut s.ctl))
                .unwrap_or_default();
            mailbox.pop_ctl(self.conn_id, &mut ctl);
            for c in ctl.drain(..) {
                if let Some(exit) = self.on_ctl(c) {
                    return exit;
                }
            }
            if ctl.capacity() > 0 {
                self.scratch().ctl = ctl;
            }
            let more = self.drain_mailbox();
            self.flush_log();
            self.publish_counts();
            if let Err(exit) = self.flush(stream) {
                return exit;
            }

            let can_read =
                self.wbuf.len() < HIGH_WATER && (self.pending_acks as usize) < max_pending;
            let more = more && self.wbuf.len() < HIGH_WATER;
            let interest = match (can_read, !self.wbuf.is_empty()) {
                (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
                (true, false) => Some(Interest::READABLE),
                (false, true) => Some(Interest::WRITABLE),
                (false, false) => None,
            };
            // The wait is polled by hand rather than a `select!` over
            // futures: the socket's readiness and the mailbox each keep
            // the task's waker in a slot of their own, so an idle
            // connection's future holds no waiter nodes (issue 12,
            // `docs/decisions/0052-idle-link-wait.md`). Shutdown arrives
            // through the mailbox (`LinkCtl::Shutdown`). Order: the
            // socket, then the mailbox, then more deliveries to take.
            let woke = std::future::poll_fn(|cx| {
                if let Some(interest) = interest
                    && let Poll::Ready(r) = stream.poll_ready(cx, interest)
                {
                    return Poll::Ready(Some(r));
                }
                if mailbox.poll_notified(cx).is_ready() || more {
                    return Poll::Ready(None);
                }
                Poll::Pending
            })
            .await;
            if let Some(r) = woke {
                let Ok(ready) = r else {
                    return Exit::Closed;
                };
                if can_read && (ready.is_readable() || ready.is_read_closed()) {
                    if rbuf.capacity() - rbuf.len() < 1024 {
                        rbuf.reserve(4096);
                    }
                    match stream.try_read_buf(&mut rbuf) {
                        Ok(0) => return Exit::Closed,
                        Ok(n) => {
                            self.ctx.metrics.bytes_in.fetch_add(n as u64, Relaxed);
                            self.mailbox.touch(self.ctx.keep_alive.now_ms());
                            got_input = true;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            // A readiness that found nothing (left over
                            // from a handshake, say) must not leave the
                            // idle connection a read buffer.
                            if rbuf.is_empty() {
                                rbuf = BytesMut::new();
                            }
                        }
                        Err(_) => return Exit::Closed,
                    }
                }
            }
        }
    }

    /// Decodes and handles every complete frame in `rbuf`.
    pub(super) async fn process_input(
        &mut self,
        rbuf: &mut BytesMut,
        max_packet: usize,
    ) -> Option<Exit> {
        let exit = loop {
            let (header, body) = match protocol::split_frame(rbuf, max_packet) {
                Ok(Some(f)) => f,
                Ok(None) => break None,
                Err(e) => break Some(Exit::Violation(e.reason_code(), e.to_string())),
            };
            let packet = match self.wire.decode(&header, body) {
                Ok(p) => p,
                Err(e) => break Some(Exit::Violation(e.reason_code(), e.to_string())),
            };
            match self.on_packet(packet) {
                Step::Done => {}
                Step::Exit(e) => break Some(e),
                Step::Route(cmd) => {
                    // Keep order: publications read before this go first.
                    if !self.flush_routed().await || self.ctx.router.send(cmd).await.is_err() {
                        return Some(Exit::Shutdown);
                    }
                }
                Step::Publish { publication, pkid } => {
                    if let Some(exit) = self.accept_publish(publication, pkid).await {
                        break Some(exit);
                    }
                    let full = self
                        .scratch
                        .as_ref()
                        .is_some_and(|s| s.routed.len() >= DRAIN_BATCH);
                    if full && !self.flush_routed().await {
                        return Some(Exit::Shutdown);
                    }
                }
            }
        };
        // What was accepted before a bad packet is still delivered.
        if !self.flush_routed().await {
            return Some(Exit::Shutdown);
        }
        exit
    }

    /// Hands the accepted publications to the router, once everything the
    /// publish hook asked to wait for is done; false when the router is gone
    /// or the hook failed (the connection then closes without acknowledging,
    /// so the client sends again: nothing is lost).
    pub(super) async fn flush_routed(&mut self) -> bool {
        let Some(scratch) = self.scratch.as_mut() else {
            return true;
        };
        for pending in std::mem::take(&mut scratch.pending) {
            if let Err(e) = pending.await {
                warn!(client_id = %self.info.client_id, error = %e, "publish hook failed; closing without acknowledging");
                scratch.routed.clear();
                return false;
            }
        }
        if scratch.routed.is_empty() {
            return true;
        }
        let batch = std::mem::replace(&mut scratch.routed, Vec::with_capacity(64));
        self.ctx
            .router
            .send(RouterCmd::Publish(batch))
            .await
            .is_ok()
    }
}
