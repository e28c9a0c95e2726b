//! Progress for long work (certificate orders, stats runs, a large apply), shown on stderr
//! only when stderr is a terminal and `-q` was not given. Never on stdout, never in a pipe or
//! a log: scripts and the journal see only results and diagnostics.
//!
//! Two shapes:
//! - [`Progress::counter`]: "label [3/10] item", advanced with [`Progress::step`] (a stats run
//!   over N domains);
//! - [`Progress::spinner`]: "label … 12 s", redrawn by a thread until dropped (one long call
//!   that cannot report steps, such as a certificate order).
//!
//! Both erase their line when finished, so what follows starts on a clean line.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static QUIET: AtomicBool = AtomicBool::new(false);

/// Switches all progress off (`-q`). Set once by the command line.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Whether progress is drawn: stderr is a terminal and `-q` was not given.
pub fn enabled() -> bool {
    !QUIET.load(Ordering::Relaxed) && std::io::stderr().is_terminal()
}

type Sink = Arc<Mutex<Box<dyn Write + Send>>>;

/// A progress line on stderr (or nothing, when not [`enabled`]).
pub struct Progress {
    sink: Option<Sink>,
    label: String,
    total: Option<usize>,
    done: usize,
    started: Instant,
    stop: Arc<AtomicBool>,
    ticker: Option<std::thread::JoinHandle<()>>,
    drawn: bool,
}

impl Progress {
    /// A counter over `total` steps (`None`: unknown).
    pub fn counter(label: &str, total: Option<usize>) -> Self {
        Self::with_sink(label, total, enabled().then(stderr_sink))
    }

    /// A spinner with the elapsed time, redrawn every 250 ms until dropped.
    pub fn spinner(label: &str) -> Self {
        let mut p = Self::with_sink(label, None, enabled().then(stderr_sink));
        p.start_ticker(Duration::from_millis(250));
        p
    }

    /// A progress line written to `sink` whatever the terminal (for tests).
    pub fn to_writer(label: &str, total: Option<usize>, sink: Box<dyn Write + Send>) -> Self {
        Self::with_sink(label, total, Some(Arc::new(Mutex::new(sink))))
    }

    fn with_sink(label: &str, total: Option<usize>, sink: Option<Sink>) -> Self {
        Self {
            sink,
            label: label.to_string(),
            total,
            done: 0,
            started: Instant::now(),
            stop: Arc::new(AtomicBool::new(false)),
            ticker: None,
            drawn: false,
        }
    }

    fn start_ticker(&mut self, every: Duration) {
        let Some(sink) = self.sink.clone() else {
            return;
        };
        let stop = self.stop.clone();
        let label = self.label.clone();
        let started = self.started;
        let frames = ['|', '/', '-', '\\'];
        // The first frame now: short work still shows that it ran.
        draw(&sink, &format!("{label} {} 0 s", frames[0]));
        self.drawn = true;
        self.ticker = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                let mut i = 1usize;
                loop {
                    std::thread::sleep(every);
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let line = format!(
                        "{label} {} {} s",
                        frames[i % frames.len()],
                        started.elapsed().as_secs()
                    );
                    draw(&sink, &line);
                    i += 1;
                }
            })
            .ok();
    }

    /// One step done; `item` names what is being worked on next (or what just finished).
    pub fn step(&mut self, item: &str) {
        self.done += 1;
        let Some(sink) = &self.sink else { return };
        let count = match self.total {
            Some(t) => format!("[{}/{t}]", self.done.min(t)),
            None => format!("[{}]", self.done),
        };
        draw(sink, &format!("{} {count} {item}", self.label));
        self.drawn = true;
    }

    /// Steps done so far.
    pub fn done(&self) -> usize {
        self.done
    }

    /// Erases the line (also done on drop).
    pub fn finish(mut self) {
        self.clear();
    }

    fn clear(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
        // Erase only a line that was drawn.
        if let Some(sink) = self.sink.take().filter(|_| self.drawn)
            && let Ok(mut w) = sink.lock()
        {
            let _ = write!(w, "\r\x1b[2K");
            let _ = w.flush();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

fn stderr_sink() -> Sink {
    Arc::new(Mutex::new(Box::new(std::io::stderr())))
}

/// Redraws the line: carriage return, erase, text (cut to 100 characters).
fn draw(sink: &Sink, line: &str) {
    let line: String = line.chars().take(100).collect();
    if let Ok(mut w) = sink.lock() {
        let _ = write!(w, "\r\x1b[2K{line}");
        let _ = w.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn counter_redraws_one_line_and_erases_it() {
        let buf = Buf::default();
        let mut p = Progress::to_writer("stats", Some(2), Box::new(buf.clone()));
        p.step("a.test");
        p.step("b.test");
        assert_eq!(p.done(), 2);
        p.finish();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "\r\x1b[2Kstats [1/2] a.test\r\x1b[2Kstats [2/2] b.test\r\x1b[2K"
        );
        assert!(!text.contains('\n'), "never scrolls");
    }

    #[test]
    fn an_unused_counter_writes_nothing() {
        let buf = Buf::default();
        Progress::to_writer("idle", Some(3), Box::new(buf.clone())).finish();
        assert!(buf.0.lock().unwrap().is_empty());
    }

    #[test]
    fn nothing_is_drawn_without_a_terminal() {
        // cargo test's stderr is captured (not a terminal) or a terminal; force quiet.
        set_quiet(true);
        assert!(!enabled());
        let mut p = Progress::counter("x", None);
        p.step("y");
        assert!(p.sink.is_none());
        set_quiet(false);
    }
}
