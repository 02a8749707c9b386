//! The WASI side of a pipe: a stage's stdin / stdout / stderr as wasmtime-wasi streams.
//! They share the pipe but do not own it: dropping them (with the store) closes nothing.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use wasmtime_wasi::cli::{IsTerminal, StdinStream, StdoutStream};
use wasmtime_wasi::p2::{InputStream, OutputStream, Pollable, StreamError, StreamResult};

use super::{Shared, WriteError};

/// A stage's stdout or stderr as WASI sees it.
#[derive(Clone)]
pub(crate) struct WasiOut(pub(super) Arc<Shared>);

impl IsTerminal for WasiOut {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for WasiOut {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for WasiOut {
    async fn ready(&mut self) {
        // Ready also when the write would fail: the guest then learns why from check_write.
        let _ = poll_fn(|cx| self.0.poll_writable(cx)).await;
    }
}

fn stream_error(err: WriteError, limit: u64) -> StreamError {
    match err {
        // EPIPE, as a native process would see: guests treat it as "downstream is gone"
        // (plain `Closed` would reach them as EIO).
        WriteError::Closed => {
            StreamError::LastOperationFailed(wasmtime::Error::new(std::io::Error::from(rustix::io::Errno::PIPE)))
        }
        // A trap, not an errno: the guest must not be able to ignore its cap.
        WriteError::LimitExceeded => StreamError::Trap(wasmtime::format_err!("output limit of {limit} bytes exceeded")),
    }
}

impl OutputStream for WasiOut {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.0.try_write(bytes).map_err(|e| stream_error(e, self.0.limit))
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        let st = self.0.state.lock();
        if st.reader_closed {
            return Err(stream_error(WriteError::Closed, self.0.limit));
        }
        if st.limit_exceeded {
            return Err(stream_error(WriteError::LimitExceeded, self.0.limit));
        }
        Ok(self.0.capacity.saturating_sub(st.buffered))
    }
}

impl AsyncWrite for WasiOut {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let to_io = |e: WriteError| match e {
            WriteError::Closed => std::io::Error::from(std::io::ErrorKind::BrokenPipe),
            WriteError::LimitExceeded => std::io::Error::other("output limit exceeded"),
        };
        match self.0.poll_writable(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(to_io(e))),
            Poll::Ready(Ok(space)) => {
                let n = buf.len().min(space);
                Poll::Ready(
                    self.0
                        .try_write(Bytes::copy_from_slice(&buf[..n]))
                        .map(|()| n)
                        .map_err(to_io),
                )
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A stage's stdin as WASI sees it.
#[derive(Clone)]
pub(crate) struct WasiIn(pub(super) Arc<Shared>);

impl IsTerminal for WasiIn {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdinStream for WasiIn {
    fn p2_stream(&self) -> Box<dyn InputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncRead + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for WasiIn {
    async fn ready(&mut self) {
        poll_fn(|cx| {
            let mut st = self.0.state.lock();
            if !st.chunks.is_empty() || st.writer_closed || st.reader_closed {
                Poll::Ready(())
            } else {
                st.read_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }
}

impl InputStream for WasiIn {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        match self.0.try_chunk(size) {
            Some(Some(chunk)) => Ok(chunk),
            Some(None) => Err(StreamError::Closed),
            None => Ok(Bytes::new()),
        }
    }
}

impl AsyncRead for WasiIn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.0.poll_chunk(cx, buf.remaining()) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(chunk)) => {
                buf.put_slice(&chunk);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(None) => Poll::Ready(Ok(())),
        }
    }
}
