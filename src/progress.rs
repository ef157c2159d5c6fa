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

/// The reporter for a run writing `total` bytes.
pub(crate) fn reporter(mode: ProgressMode, total: u64) -> Box<dyn Progress> {
    let terminal = std::io::stderr().is_terminal();
    match mode {
        ProgressMode::Never => Box::new(imgstream_stream::NoProgress),
        ProgressMode::Auto | ProgressMode::Always if terminal => Box::new(bar(total)),
        ProgressMode::Auto => Box::new(imgstream_stream::NoProgress),
        ProgressMode::Always => Box::new(Lines::new(total)),
    }
}

fn bar(total: u64) -> Bar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(4));
    let style = ProgressStyle::with_template(
        "[{elapsed_precise}] [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .expect("OK to unwrap: the template is a constant")
    .progress_chars("=> ");
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

/// Plain lines for logs: "imgstream: 1.2 GiB of 4.0 GiB (30%)", at most every few seconds.
struct Lines {
    total: u64,
    state: Mutex<(u64, Instant)>,
}

const LINE_INTERVAL: Duration = Duration::from_secs(5);

impl Lines {
    fn new(total: u64) -> Self {
        Self { total, state: Mutex::new((0, Instant::now())) }
    }
}

impl Progress for Lines {
    fn advance(&self, bytes: u64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.0 += bytes;
        if state.1.elapsed() >= LINE_INTERVAL {
            state.1 = Instant::now();
            let percent = crate::size::percent(state.0, self.total);
            eprintln!("imgstream: {} of {} ({percent:.0}%)", human(state.0), human(self.total));
        }
    }
}
