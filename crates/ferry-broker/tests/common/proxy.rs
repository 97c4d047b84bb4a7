//! A TCP proxy for fault tests: forwards bytes both ways and can cut every open connection,
//! as a network failure would, mid-request or mid-response.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy. Dropping it stops accepting.
pub struct Proxy {
    addr: SocketAddr,
    cut: watch::Sender<u64>,
    cuts: Arc<AtomicU64>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listen on 127.0.0.1:0. Call [`Proxy::forward_to`] before clients connect.
    pub async fn bind() -> (Proxy, TcpListener) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, _) = watch::channel(0);
        let proxy = Proxy {
            addr,
            cut,
            cuts: Arc::new(AtomicU64::new(0)),
            accept: tokio::spawn(async {}),
        };
        (proxy, listener)
    }

    /// Start forwarding connections accepted on `listener` to `target`.
    pub fn forward_to(&mut self, listener: TcpListener, target: SocketAddr) {
        let cut = self.cut.clone();
        self.accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut cut_rx = cut.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    tokio::select! {
                        _ = tokio::io::copy(&mut cr, &mut sw) => {}
                        _ = tokio::io::copy(&mut sr, &mut cw) => {}
                        _ = cut_rx.changed() => {}
                    }
                    // Dropping both halves closes both sockets.
                });
            }
        });
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Close every connection open now.
    pub fn cut(&self) {
        self.cuts.fetch_add(1, Ordering::Relaxed);
        self.cut.send_modify(|n| *n += 1);
    }

    /// How many times [`Proxy::cut`] ran.
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
