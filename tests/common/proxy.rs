//! A TCP proxy that puts network faults between two parts: it forwards to a target, and
//! the fault in force can be changed while it runs.
//!
//! Each direction of each connection counts its bytes from the moment the fault was set
//! (or the connection opened, if later), so a fault set on a live connection strikes the
//! next thing sent on it — after the TLS handshake — and one in force when a connection
//! opens strikes its handshake.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to the bytes of one direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forwards every byte at once.
    Pass,
    /// Holds each chunk this long before forwarding it.
    Delay(Duration),
    /// Forwards nothing and keeps both sockets open (until the fault changes).
    Stall,
    /// Forwards this many bytes, then closes both sides (FIN).
    CutAfter(usize),
    /// Forwards this many bytes, then resets both sides (RST: `SO_LINGER` zero).
    Reset(usize),
    /// Flips every bit of the byte at this offset, once.
    Corrupt(usize),
}

#[derive(Clone, Copy)]
struct Setting {
    /// Client to target.
    up: Fault,
    /// Target to client.
    down: Fault,
    /// Changes with every setting, so each direction starts counting again.
    generation: u64,
}

/// How a connection ends when a fault ends it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Open,
    Close,
    Reset,
}

/// A running proxy; stopped (every socket closed) when dropped.
pub struct Proxy {
    runtime: Option<tokio::runtime::Runtime>,
    addr: SocketAddr,
    setting: watch::Sender<Setting>,
    accepted: Arc<AtomicUsize>,
}

impl Proxy {
    /// A proxy on 127.0.0.1 with an ephemeral port, forwarding to `target`.
    pub fn start(target: SocketAddr) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fault-proxy")
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let setting = watch::Sender::new(Setting {
            up: Fault::Pass,
            down: Fault::Pass,
            generation: 0,
        });
        let accepted = Arc::new(AtomicUsize::new(0));
        let (watching, count) = (setting.clone(), accepted.clone());
        runtime.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                count.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(connection(client, target, watching.subscribe()));
            }
        });
        Self {
            runtime: Some(runtime),
            addr,
            setting,
            accepted,
        }
    }

    /// Where to connect instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Puts `fault` in force in both directions.
    pub fn set(&self, fault: Fault) {
        self.set_each(fault, fault);
    }

    /// Puts `up` in force toward the target and `down` toward the client.
    pub fn set_each(&self, up: Fault, down: Fault) {
        self.setting.send_modify(|s| {
            s.up = up;
            s.down = down;
            s.generation += 1;
        });
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn connection(client: TcpStream, target: SocketAddr, setting: watch::Receiver<Setting>) {
    let Ok(server) = TcpStream::connect(target).await else {
        return; // the client sees its connection closed
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let end = watch::Sender::new(End::Open);
    tokio::spawn(pump(
        client_read,
        server_write,
        true,
        setting.clone(),
        end.clone(),
    ));
    tokio::spawn(pump(server_read, client_write, false, setting, end));
}

/// Forwards one direction, applying the fault in force to each chunk.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    up: bool,
    mut setting: watch::Receiver<Setting>,
    end: watch::Sender<End>,
) {
    let mut ended = end.subscribe();
    let mut generation = setting.borrow_and_update().generation;
    let mut count = 0usize;
    let mut buf = vec![0u8; 16 * 1024];
    'chunks: loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) => {
                    // An orderly close: pass it on, and let the other direction finish.
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => n,
                Err(_) => break 'chunks,
            },
            _ = ended.changed() => break 'chunks,
        };
        let chunk = &mut buf[..n];
        let fault = loop {
            let s = *setting.borrow_and_update();
            if s.generation != generation {
                generation = s.generation;
                count = 0;
            }
            let fault = if up { s.up } else { s.down };
            if fault != Fault::Stall {
                break fault;
            }
            // Hold the chunk until the fault changes.
            tokio::select! {
                changed = setting.changed() => if changed.is_err() { break 'chunks },
                _ = ended.changed() => break 'chunks,
            }
        };
        let (forward, then) = match fault {
            Fault::Pass | Fault::Stall => (n, End::Open),
            Fault::Delay(d) => {
                tokio::time::sleep(d).await;
                (n, End::Open)
            }
            Fault::CutAfter(k) | Fault::Reset(k) if count + n > k => {
                let how = if matches!(fault, Fault::Reset(_)) {
                    End::Reset
                } else {
                    End::Close
                };
                (k.saturating_sub(count), how)
            }
            Fault::CutAfter(_) | Fault::Reset(_) => (n, End::Open),
            Fault::Corrupt(k) => {
                if (count..count + n).contains(&k) {
                    chunk[k - count] ^= 0xFF;
                }
                (n, End::Open)
            }
        };
        if forward > 0 && to.write_all(&chunk[..forward]).await.is_err() {
            break;
        }
        count += n;
        if then != End::Open {
            if then == End::Reset {
                // Both sockets: this pump holds a half of each.
                let _ = from.as_ref().set_zero_linger();
                let _ = to.as_ref().set_zero_linger();
            }
            end.send_replace(then);
            return;
        }
    }
    // A read or write failed, or the other direction ended the connection.
    end.send_modify(|e| {
        if *e == End::Open {
            *e = End::Close;
        }
    });
}
