//! A TCP link the test can cut: a forwarder between a proxy and a server
//! (the fleet's store), so one proxy can lose the store while the others
//! keep it, as a network partition would do.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Link {
    /// Where clients connect instead of the server.
    pub port: u16,
    cut: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Link {
    /// Forward 127.0.0.1:<new port> to 127.0.0.1:`to`.
    pub async fn start(to: u16) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the link");
        let port = listener.local_addr().expect("its address").port();
        let cut = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0u64);
        let target: SocketAddr = ([127, 0, 0, 1], to).into();
        let (is_cut, gen_tx) = (cut.clone(), generation.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if is_cut.load(Ordering::Acquire) {
                    // Refused, as by a dropped route: the connection just closes.
                    continue;
                }
                let mut cut_now = gen_tx.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    tokio::select! {
                        _ = tokio::io::copy(&mut cr, &mut sw) => {}
                        _ = tokio::io::copy(&mut sr, &mut cw) => {}
                        _ = cut_now.changed() => {}
                    }
                });
            }
        });
        Link {
            port,
            cut,
            generation,
            task,
        }
    }

    /// Drop every connection through the link and refuse new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Let connections through again.
    pub fn mend(&self) {
        self.cut.store(false, Ordering::Release);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}
