//! A TCP proxy a test controls, placed between the code under test and RabbitMQ or
//! PostgreSQL, so that one test can cut its own connections while parallel tests keep
//! the shared services.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// A running proxy.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    state: Arc<State>,
    accept: AbortHandle,
}

struct State {
    up: AtomicBool,
    /// Nothing from the server reaches the clients while set: a broker that takes a
    /// publish and never confirms it, a database that never answers.
    stalled: AtomicBool,
    conns: Mutex<Vec<AbortHandle>>,
}

impl Proxy {
    /// Starts a proxy on 127.0.0.1:0 forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            up: AtomicBool::new(true),
            stalled: AtomicBool::new(false),
            conns: Mutex::new(vec![]),
        });
        let st = Arc::clone(&state);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !st.up.load(Ordering::SeqCst) {
                    // Down: the connection is closed at once, as a dead server would.
                    drop(client);
                    continue;
                }
                let state = Arc::clone(&st);
                let task = tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        let (mut from_client, mut to_client) = client.into_split();
                        let (mut from_server, mut to_server) = server.into_split();
                        let up = tokio::io::copy(&mut from_client, &mut to_server);
                        let down = forward_unless_stalled(&state, &mut from_server, &mut to_client);
                        let _ = tokio::join!(up, down);
                    }
                });
                st.conns
                    .lock()
                    .expect("proxy lock")
                    .push(task.abort_handle());
            }
        })
        .abort_handle();
        Ok(Proxy {
            addr,
            state,
            accept,
        })
    }

    /// Cuts every connection and refuses new ones.
    pub fn down(&self) {
        self.state.up.store(false, Ordering::SeqCst);
        for c in self.state.conns.lock().expect("proxy lock").drain(..) {
            c.abort();
        }
    }

    /// Accepts connections again.
    pub fn up(&self) {
        self.state.up.store(true, Ordering::SeqCst);
    }

    /// Holds back everything the server sends (the connections stay open and what the
    /// clients send still arrives) until [`Proxy::resume`].
    pub fn stall(&self) {
        self.state.stalled.store(true, Ordering::SeqCst);
    }

    /// Lets what the server sent, and sends, through again.
    pub fn resume(&self) {
        self.state.stalled.store(false, Ordering::SeqCst);
    }
}

/// Copies server → client, holding each chunk while the proxy is stalled.
async fn forward_unless_stalled(
    state: &State,
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        while state.stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        to.write_all(&buf[..n]).await?;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.down();
        self.accept.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_flow_both_ways_and_a_stall_holds_the_answers() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = Proxy::start(upstream).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        proxy.stall();
        c.write_all(b"held").await.unwrap();
        let held = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            c.read_exact(&mut buf),
        )
        .await;
        assert!(held.is_err(), "nothing comes back while stalled: {held:?}");
        proxy.resume();
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"held");
    }
}
