//! Test helper: a fake ring member on a real socket (127.0.0.1, port 0)
//! that answers each request line with lines a test chooses, so that a
//! node's rounds and look-ups can be tried against a misbehaving peer.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use parking_lot::Mutex;

/// How a fake answers: the request line in, the answer lines out.
pub(crate) type Answer = dyn Fn(&str) -> Vec<String> + Send + Sync;

/// A fake member; stops (and joins its threads) when dropped.
pub(crate) struct Fake {
    pub(crate) addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Fake {
    /// Listens on 127.0.0.1, port 0, answering with `answer`.
    pub(crate) fn start(answer: impl Fn(&str) -> Vec<String> + Send + Sync + 'static) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a fake member");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("its address");
        let stop = Arc::new(AtomicBool::new(false));
        let threads = Arc::new(Mutex::new(Vec::new()));
        let answer: Arc<Answer> = Arc::new(answer);
        let (stop2, threads2) = (Arc::clone(&stop), Arc::clone(&threads));
        let accept = thread::Builder::new()
            .name("fake-member".into())
            .spawn(move || {
                while !stop2.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (stop, answer) = (Arc::clone(&stop2), Arc::clone(&answer));
                            let conn = thread::Builder::new()
                                .name("fake-member-conn".into())
                                .spawn(move || serve(stream, &stop, &*answer))
                                .expect("spawn");
                            threads2.lock().push(conn);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(10));
                        }
                        Err(_) => return,
                    }
                }
            })
            .expect("spawn");
        threads.lock().push(accept);
        Fake {
            addr,
            stop,
            threads,
        }
    }
}

fn serve(stream: TcpStream, stop: &AtomicBool, answer: &Answer) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while !stop.load(Ordering::SeqCst) {
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {
                for out in answer(line.trim_end()) {
                    if writeln!(writer, "{out}").is_err() {
                        return;
                    }
                }
                line.clear();
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        loop {
            let Some(handle) = self.threads.lock().pop() else {
                break;
            };
            let _ = handle.join();
        }
    }
}

/// `n` fakes with ids `first_id`, `first_id + 1`, ...: each answers a
/// `LOOK` after `delay` with `NEXT` the one after it (an honest-looking
/// step, one id closer), the last one with `OWNR` itself (at a made-up address). Ids are in
/// order, so `fakes[0]` is the member to start from.
pub(crate) fn slow_chain(first_id: u64, n: usize, delay: Duration) -> Vec<Fake> {
    let mut chain: Vec<Fake> = Vec::with_capacity(n);
    let mut after: Option<(u64, SocketAddr)> = None;
    for i in (0..n as u64).rev() {
        let id = first_id + i;
        let fake = Fake::start(move |_| {
            thread::sleep(delay);
            vec![match after {
                Some((next, addr)) => format!("NEXT {next}@{addr}"),
                None => format!("OWNR {id}@127.0.0.1:9"),
            }]
        });
        after = Some((id, fake.addr));
        chain.push(fake);
    }
    chain.reverse();
    chain
}
