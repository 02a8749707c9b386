//! Bounded in-memory byte pipes: the stdio of every stage and the links between them.
//!
//! A pipe holds at most `capacity` bytes (plus one chunk from a host-side writer) as a
//! queue of [`Bytes`] chunks, so data moves between stages without copies: what a guest
//! writes is the chunk the next stage reads. The writer also counts every byte against a
//! hard `limit` (the stage's output cap): the write that would cross it is refused and the
//! pipe remembers that, so the executor can name the failure `output_limit`.
//!
//! The owning ends ([`PipeWriter`], [`PipeReader`]) close the pipe when dropped; the WASI
//! stream views ([`WasiOut`], [`WasiIn`]) handed to a store do not, because the store may
//! outlive the stage's run. One reader and one writer are expected at a time: each side
//! keeps a single waker.

mod wasi;

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use parking_lot::Mutex;

pub(crate) use wasi::{WasiIn, WasiOut};

/// Why a write was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteError {
    /// The reader is gone (the next stage stopped reading).
    Closed,
    /// The byte cap would be crossed.
    LimitExceeded,
}

struct State {
    chunks: VecDeque<Bytes>,
    buffered: usize,
    written: u64,
    limit_exceeded: bool,
    writer_closed: bool,
    reader_closed: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

struct Shared {
    state: Mutex<State>,
    capacity: usize,
    limit: u64,
}

/// A pipe of `capacity` bytes whose writer may write `limit` bytes in all.
pub(crate) fn pipe(capacity: usize, limit: u64) -> (PipeWriter, PipeReader) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            chunks: VecDeque::new(),
            buffered: 0,
            written: 0,
            limit_exceeded: false,
            writer_closed: false,
            reader_closed: false,
            read_waker: None,
            write_waker: None,
        }),
        capacity: capacity.max(1),
        limit,
    });
    (PipeWriter(Arc::clone(&shared)), PipeReader(shared))
}

fn wake(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
    }
}

impl Shared {
    /// Free space, once there is some (or the reader is gone).
    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<Result<usize, WriteError>> {
        let mut st = self.state.lock();
        if st.reader_closed {
            return Poll::Ready(Err(WriteError::Closed));
        }
        if st.limit_exceeded {
            return Poll::Ready(Err(WriteError::LimitExceeded));
        }
        if st.buffered < self.capacity {
            return Poll::Ready(Ok(self.capacity - st.buffered));
        }
        st.write_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Appends without waiting; the caller checked for space (or accepts the overshoot).
    fn try_write(&self, bytes: Bytes) -> Result<(), WriteError> {
        let mut st = self.state.lock();
        if st.reader_closed {
            return Err(WriteError::Closed);
        }
        let len = bytes.len() as u64;
        if st.limit_exceeded || st.written.saturating_add(len) > self.limit {
            st.limit_exceeded = true;
            return Err(WriteError::LimitExceeded);
        }
        if bytes.is_empty() {
            return Ok(());
        }
        st.written += len;
        st.buffered += bytes.len();
        st.chunks.push_back(bytes);
        let waker = st.read_waker.take();
        drop(st);
        wake(waker);
        Ok(())
    }

    /// The next chunk (at most `max` bytes); `None` at end of stream.
    fn poll_chunk(&self, cx: &mut Context<'_>, max: usize) -> Poll<Option<Bytes>> {
        match self.try_chunk(max) {
            Some(chunk) => Poll::Ready(chunk),
            None => {
                let mut st = self.state.lock();
                // Re-check under the lock: a write may have landed since.
                if st.chunks.is_empty() && !st.writer_closed && !st.reader_closed {
                    st.read_waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                drop(st);
                Poll::Ready(self.try_chunk(max).flatten())
            }
        }
    }

    /// `Some(Some(chunk))`, `Some(None)` at end of stream, `None` when nothing is ready.
    fn try_chunk(&self, max: usize) -> Option<Option<Bytes>> {
        let mut st = self.state.lock();
        let ended = st.writer_closed || st.reader_closed;
        let chunk = match st.chunks.front_mut() {
            Some(front) if front.len() > max => front.split_to(max),
            Some(_) => st.chunks.pop_front()?,
            None if ended => return Some(None),
            None => return None,
        };
        st.buffered -= chunk.len();
        let waker = if st.buffered < self.capacity {
            st.write_waker.take()
        } else {
            None
        };
        drop(st);
        wake(waker);
        Some(Some(chunk))
    }

    fn close_writer(&self) {
        let mut st = self.state.lock();
        st.writer_closed = true;
        let waker = st.read_waker.take();
        drop(st);
        wake(waker);
    }

    fn close_reader(&self) {
        let mut st = self.state.lock();
        st.reader_closed = true;
        st.chunks.clear();
        st.buffered = 0;
        let waker = st.write_waker.take();
        drop(st);
        wake(waker);
    }
}

/// The owning write end; dropping it signals end of stream.
pub(crate) struct PipeWriter(Arc<Shared>);

impl PipeWriter {
    /// Writes one chunk, waiting for space first.
    pub(crate) async fn write(&self, bytes: Bytes) -> Result<(), WriteError> {
        poll_fn(|cx| self.0.poll_writable(cx)).await?;
        self.0.try_write(bytes)
    }

    /// A view for a WASI context (does not close the pipe when dropped).
    pub(crate) fn wasi(&self) -> WasiOut {
        WasiOut(Arc::clone(&self.0))
    }

    /// Whether a write was refused for crossing the byte cap.
    pub(crate) fn limit_exceeded(&self) -> bool {
        self.0.state.lock().limit_exceeded
    }

    /// Whether the reader went away.
    pub(crate) fn reader_closed(&self) -> bool {
        self.0.state.lock().reader_closed
    }

    /// The byte cap.
    pub(crate) fn limit(&self) -> u64 {
        self.0.limit
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        self.0.close_writer();
    }
}

/// The owning read end; dropping it makes further writes fail with [`WriteError::Closed`].
pub(crate) struct PipeReader(Arc<Shared>);

impl PipeReader {
    /// The next chunk, `None` at end of stream.
    pub(crate) async fn chunk(&self) -> Option<Bytes> {
        poll_fn(|cx| self.0.poll_chunk(cx, usize::MAX)).await
    }

    /// A view for a WASI context (does not close the pipe when dropped).
    pub(crate) fn wasi(&self) -> WasiIn {
        WasiIn(Arc::clone(&self.0))
    }
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        self.0.close_reader();
    }
}

#[cfg(test)]
mod tests {
    use wasmtime_wasi::p2::{InputStream, OutputStream, StreamError};

    use super::*;

    #[tokio::test]
    async fn chunks_flow_in_order_and_end_on_close() {
        let (w, r) = pipe(8, 100);
        let writer = tokio::spawn(async move {
            for i in 0..10u8 {
                w.write(Bytes::from(vec![i; 5])).await.unwrap();
            }
        });
        let mut got = Vec::new();
        while let Some(chunk) = r.chunk().await {
            got.extend_from_slice(&chunk);
        }
        writer.await.unwrap();
        assert_eq!(got.len(), 50);
        assert_eq!(got[49], 9);
    }

    #[tokio::test]
    async fn the_limit_refuses_the_crossing_write_and_sticks() {
        let (w, r) = pipe(1024, 10);
        w.write(Bytes::from_static(b"12345")).await.unwrap();
        assert_eq!(
            w.write(Bytes::from_static(b"123456")).await,
            Err(WriteError::LimitExceeded)
        );
        assert!(w.limit_exceeded());
        assert_eq!(w.write(Bytes::from_static(b"1")).await, Err(WriteError::LimitExceeded));
        drop(w);
        assert_eq!(r.chunk().await.as_deref(), Some(&b"12345"[..]));
        assert_eq!(r.chunk().await, None);
    }

    #[tokio::test]
    async fn a_dropped_reader_fails_writes_and_wakes_a_blocked_writer() {
        let (w, r) = pipe(4, 100);
        w.write(Bytes::from_static(b"1234")).await.unwrap();
        let blocked = tokio::spawn(async move { w.write(Bytes::from_static(b"5")).await });
        tokio::task::yield_now().await;
        drop(r);
        assert_eq!(blocked.await.unwrap(), Err(WriteError::Closed));
    }

    #[test]
    fn wasi_views_split_chunks_to_the_requested_size() {
        let (w, r) = pipe(64, 100);
        let mut out = w.wasi();
        assert_eq!(out.check_write().unwrap(), 64);
        out.write(Bytes::from_static(b"abcdef")).unwrap();
        let mut input = r.wasi();
        assert_eq!(&input.read(4).unwrap()[..], b"abcd");
        assert_eq!(&input.read(4).unwrap()[..], b"ef");
        assert!(input.read(4).unwrap().is_empty());
        drop(w);
        assert!(matches!(input.read(4), Err(StreamError::Closed)));
    }
}
