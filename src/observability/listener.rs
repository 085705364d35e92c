//! What both listening ports (gRPC and HTTP) do about clients that do not behave (issue 20): a
//! connection limit, a connection that receives nothing for too long, a peer that stops reading
//! our answer, and the forced close at the end of a bounded drain.
//!
//! The servers above (tonic, hyper) spawn one task per connection that this process cannot reach
//! once spawned, so the limits live in the connection itself: [`GuardedStream`] wraps the TCP
//! stream, holds a slot of the port's limit until it is dropped, and turns "idle too long",
//! "stalled too long" and "killed" into I/O errors, which end the server's connection task.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};

use super::metrics::{Metrics, Port, PortLabels};

/// The limits of one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections at most; a connection past it is closed as soon as it is accepted.
    pub max_connections: usize,
    /// A connection that receives no byte for this long is closed (`None`: no limit).
    pub read_idle: Option<Duration>,
    /// A connection whose peer takes none of our bytes for this long is closed (`None`: no
    /// limit).
    pub write_stall: Option<Duration>,
}

/// Closes every connection handed out with it, at once ([`KillSwitch::kill`]). The gRPC server
/// keeps one per serving generation, to end a drain that has run out of time.
#[derive(Debug, Clone)]
pub struct KillSwitch(Arc<watch::Sender<bool>>);

impl Default for KillSwitch {
    fn default() -> Self {
        KillSwitch(Arc::new(watch::channel(false).0))
    }
}

impl KillSwitch {
    /// Closes the connections of this switch: their next read or write fails.
    pub fn kill(&self) {
        self.0.send_replace(true);
    }

    fn killed(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let mut rx = self.0.subscribe();
        Box::pin(async move {
            // A dropped switch kills nothing.
            if rx.wait_for(|k| *k).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

/// A bound port that hands out [`GuardedStream`]s within its [`ConnectionLimits`].
pub struct GuardedListener {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    limits: ConnectionLimits,
    port: Port,
    metrics: Arc<Metrics>,
    /// Set while the port is full and the warning has been logged; cleared when a slot frees,
    /// so a flood of refused connections logs once per episode, not once per connection.
    full_warned: AtomicBool,
}

impl GuardedListener {
    /// Wraps a bound listener.
    pub fn new(
        listener: TcpListener,
        limits: ConnectionLimits,
        port: Port,
        metrics: Arc<Metrics>,
    ) -> Self {
        GuardedListener {
            listener,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            port,
            metrics,
            full_warned: AtomicBool::new(false),
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection within the limit, with `kill` as its kill switch. Connections past
    /// the limit are closed at once (and counted), accept errors waited out: neither ends the
    /// server.
    pub async fn accept(&self, kill: Option<&KillSwitch>) -> GuardedStream {
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                // Out of file descriptors, or a connection reset before accept: wait a little
                // instead of spinning.
                Err(e) => {
                    tracing::warn!(port = self.port.as_str(), error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let labels = PortLabels { port: self.port };
            let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
                self.metrics
                    .connections_rejected
                    .get_or_create(&labels)
                    .inc();
                if !self.full_warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        port = self.port.as_str(),
                        max_connections = self.limits.max_connections,
                        "connection limit reached: closing new connections until one ends"
                    );
                }
                drop(stream);
                continue;
            };
            if self.slots.available_permits() > 0 {
                self.full_warned.store(false, Ordering::Relaxed);
            }
            // Small unary answers must not wait for the client's delayed ACK (~40 ms on Linux).
            let _ = stream.set_nodelay(true);
            let open = self.metrics.connections_open.get_or_create(&labels).clone();
            open.inc();
            return GuardedStream {
                inner: stream,
                killed: kill.map(KillSwitch::killed),
                dead: false,
                read_idle: self
                    .limits
                    .read_idle
                    .map(|d| (d, Box::pin(tokio::time::sleep(d)))),
                write_stall: self.limits.write_stall,
                stall_timer: None,
                _slot: Slot {
                    _permit: permit,
                    open,
                },
            };
        }
    }
}

/// A place in the port's connection limit, given back (and the open-connections gauge lowered)
/// when the connection is dropped.
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// An accepted connection under its port's limits (see the module documentation).
pub struct GuardedStream {
    inner: TcpStream,
    /// `None` once the kill has been seen (a finished future must not be polled again), or when
    /// the connection has no kill switch.
    killed: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// Killed: every later read or write fails.
    dead: bool,
    read_idle: Option<(Duration, Pin<Box<Sleep>>)>,
    write_stall: Option<Duration>,
    /// Running while the peer does not take our bytes.
    stall_timer: Option<Pin<Box<Sleep>>>,
    _slot: Slot,
}

impl GuardedStream {
    /// The TCP stream underneath (for its addresses).
    pub fn get_ref(&self) -> &TcpStream {
        &self.inner
    }

    fn check_killed(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if let Some(k) = &mut self.killed
            && k.as_mut().poll(cx).is_ready()
        {
            self.killed = None;
            self.dead = true;
        }
        if self.dead {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection closed: its drain time is over",
            ));
        }
        Ok(())
    }

    /// Runs the stall timer while a write is pending; an error once it has run out.
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some(limit) = self.write_stall else {
            return Poll::Pending;
        };
        let timer = self
            .stall_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the peer took none of our bytes for {limit:?}"),
            )),
            Poll::Pending => Poll::Pending,
        }
    }

    fn write_result<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.stall_timer = None;
                Poll::Ready(r)
            }
            Poll::Pending => match self.poll_stall(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_killed(cx)?;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before
                    && let Some((limit, timer)) = &mut this.read_idle
                {
                    timer.as_mut().reset(Instant::now() + *limit);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if let Some((limit, timer)) = &mut this.read_idle
                    && timer.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("nothing received for {limit:?}"),
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_killed(cx)?;
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.write_result(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_killed(cx)?;
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.write_result(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_killed(cx)?;
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.write_result(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
