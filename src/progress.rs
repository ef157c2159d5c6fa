//! Progress on stderr: a bar on a terminal, periodic lines with `--progress always` elsewhere.

use crate::size::human;
use clap::ValueEnum;
use imgstream_stream::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `--progress` values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum ProgressMode {
    /// A bar when stderr is a terminal, nothing otherwise.
    #[default]
    Auto,
    /// A bar on a terminal, one line every few seconds elsewhere (logs).
    Always,
    /// Nothing.
    Never,
}

/// The reporter for a run writing `total` bytes, or an unknown amount (a stream on stdin).
pub(crate) fn reporter(mode: ProgressMode, total: Option<u64>) -> Box<dyn Progress> {
    let terminal = std::io::stderr().is_terminal();
    match mode {
        ProgressMode::Never => Box::new(imgstream_stream::NoProgress),
        ProgressMode::Auto | ProgressMode::Always if terminal => Box::new(bar(total)),
        ProgressMode::Auto => Box::new(imgstream_stream::NoProgress),
        ProgressMode::Always => Box::new(Lines::new(total)),
    }
}

fn bar(total: Option<u64>) -> Bar {
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr_with_hz(4));
    // Without a total there is no fraction to draw: bytes so far and the rate.
    let template = if total.is_some() {
        "[{elapsed_precise}] [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}"
    } else {
        "[{elapsed_precise}] {spinner} {binary_bytes} {binary_bytes_per_sec}"
    };
    let style =
        ProgressStyle::with_template(template).expect("OK to unwrap: the template is a constant").progress_chars("=> ");
    bar.set_style(style);
    crate::signals::clear_on_signal(&bar);
    Bar(bar)
}

/// An indicatif bar, cleared when the run ends so the summary line stands alone.
struct Bar(ProgressBar);

impl Progress for Bar {
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// Plain lines for logs: "imgstream: 1.2 GiB of 4.0 GiB (30%)", or "imgstream: 1.2 GiB
/// (80.0 MiB/s)" when the total is unknown, at most every few seconds.
struct Lines {
    total: Option<u64>,
    started: Instant,
    state: Mutex<(u64, Instant)>,
}

const LINE_INTERVAL: Duration = Duration::from_secs(5);

impl Lines {
    fn new(total: Option<u64>) -> Self {
        Self { total, started: Instant::now(), state: Mutex::new((0, Instant::now())) }
    }
}

impl Progress for Lines {
    fn advance(&self, bytes: u64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.0 += bytes;
        if state.1.elapsed() >= LINE_INTERVAL {
            state.1 = Instant::now();
            match self.total {
                Some(total) => {
                    let percent = crate::size::percent(state.0, total);
                    eprintln!("imgstream: {} of {} ({percent:.0}%)", human(state.0), human(total));
                }
                None => {
                    let rate = state.0 as f64 / self.started.elapsed().as_secs_f64().max(f64::EPSILON);
                    eprintln!("imgstream: {} ({}/s)", human(state.0), human(rate as u64));
                }
            }
        }
    }
}
