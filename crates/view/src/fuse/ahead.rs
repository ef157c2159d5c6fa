//! Reading a mounted file's used bytes ahead of a reader that reads it once, front to back.
//!
//! With direct I/O the kernel hands each read to the server synchronously, one request at a
//! time: whatever the server does per request, the reader waits for. So a read-ahead thread
//! reads the used bytes that follow the last request into blocks while the reader works on
//! what it has, and a request that falls inside a block is answered with a single copy.
//! Blocks follow the used ranges: each range is cut in [`BLOCK`] steps from its start, which
//! is how borg's fixed chunker reads a data range (`lseek(SEEK_DATA)`, then 4 MiB at a time),
//! so its requests do not straddle two blocks. Any other request is read as before, by the
//! request's own thread: it never waits for the read-ahead thread, which runs only on a CPU
//! that is otherwise idle.
//!
//! A block holds what a read would answer ([`View::read_at`]); a failed source read is
//! recorded by the view like any other, and the request then reads (and fails) itself.

use crate::View;
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Condvar, Mutex, MutexGuard};

/// Bytes per block: borg's fixed chunker reads this much at a time.
const BLOCK: u64 = 4 << 20;
/// Blocks kept read ahead of the reader.
const DEPTH: usize = 4;

/// A piece of one file, read ahead.
struct Block {
    index: usize,
    range: Range<u64>,
    data: Vec<u8>,
}

#[derive(Default)]
struct State {
    /// The file being read ahead; None: idle.
    file: Option<usize>,
    /// Where its next block starts; None: it is read ahead to its last used byte.
    next: Option<u64>,
    /// Blocks read ahead, in file order.
    ready: VecDeque<Block>,
    /// Start of the block being read now, if any.
    filling: Option<u64>,
    /// Buffers of blocks the reader is done with, for reuse.
    spare: Vec<Vec<u8>>,
    /// Bumped at every restart: a block read for an earlier plan is dropped.
    generation: u64,
    stopped: bool,
}

impl State {
    /// Whether a request at `offset` of file `index` lies between the first block kept and
    /// the end of the next one planned: the reader is where the read-ahead expects it.
    fn expects(&self, index: usize, offset: u64) -> bool {
        let first = self.ready.front().map(|b| b.range.start).or(self.filling).or(self.next);
        let before_next_end = self.next.is_none_or(|next| offset < next.saturating_add(BLOCK));
        self.file == Some(index) && first.is_some_and(|first| first <= offset) && before_next_end
    }

    /// Starts over at block `start` of file `index` (None: idle), dropping what was read ahead.
    fn restart(&mut self, index: usize, start: Option<u64>) {
        let dropped = self.ready.drain(..).map(|block| block.data);
        self.spare.extend(dropped);
        self.file = start.map(|_| index);
        self.next = start;
        self.generation += 1;
    }
}

/// The read-ahead thread's side and the request handlers' side of the same state.
#[derive(Default)]
pub(super) struct ReadAhead {
    state: Mutex<State>,
    wake: Condvar,
}

impl ReadAhead {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The block holding all of the request for `range` of file `index`, lent until dropped.
    /// None if no block holds it (the caller reads it), after moving the read-ahead to the
    /// request if it was elsewhere.
    pub(super) fn lend(&self, view: &View, index: usize, range: Range<u64>) -> Option<Lent<'_>> {
        let mut state = self.lock();
        // Blocks before the request are done with: the reader has moved past them.
        while state.ready.front().is_some_and(|b| b.index == index && b.range.end <= range.start) {
            let done = state.ready.pop_front().map(|block| block.data);
            state.spare.extend(done);
        }
        let holds = |b: &Block| b.index == index && b.range.start <= range.start && range.end <= b.range.end;
        if state.ready.front().is_some_and(holds) {
            // Out of the queue while lent: the copy to the reader happens unlocked.
            let generation = state.generation;
            return state.ready.pop_front().map(|block| Lent { ahead: self, block: Some(block), range, generation });
        }
        if !state.expects(index, range.start) {
            state.restart(index, block_holding(view, index, range.start).map(|block| block.start));
        }
        self.wake.notify_one();
        None
    }

    /// Ends [`run`](Self::run).
    pub(super) fn stop(&self) {
        self.lock().stopped = true;
        self.wake.notify_one();
    }

    /// The read-ahead thread: keeps [`DEPTH`] blocks read ahead of the reader until stopped.
    pub(super) fn run(&self, view: &View) {
        let mut state = self.lock();
        loop {
            if state.stopped {
                return;
            }
            let wanted = state.ready.len() < DEPTH;
            let block = state.file.zip(state.next.filter(|_| wanted));
            let Some((index, range)) =
                block.and_then(|(index, start)| Some((index, block_holding(view, index, start)?)))
            else {
                state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            };
            let generation = state.generation;
            state.next = view.seek_data(index, range.end);
            state.filling = Some(range.start);
            let mut data = state.spare.pop().unwrap_or_default();
            drop(state);
            data.resize((range.end - range.start) as usize, 0);
            let read = view.read_at(index, range.start, &mut data);
            state = self.lock();
            state.filling = None;
            if state.generation != generation {
                state.spare.push(data);
            } else if read.is_ok() {
                state.ready.push_back(Block { index, range, data });
            } else {
                // Recorded by the view; the reader's own request reads and fails.
                state.restart(index, None);
            }
        }
    }
}

/// A block lent to answer one request; dropping it gives it back.
pub(super) struct Lent<'a> {
    ahead: &'a ReadAhead,
    block: Option<Block>,
    range: Range<u64>,
    /// The plan it belongs to: after a restart it is not given back to the queue.
    generation: u64,
}

impl Lent<'_> {
    /// The bytes the request asked for.
    pub(super) fn bytes(&self) -> &[u8] {
        let Some(block) = &self.block else { return &[] };
        let from = (self.range.start - block.range.start) as usize;
        block.data.get(from..from + (self.range.end - self.range.start) as usize).unwrap_or_default()
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        let Some(block) = self.block.take() else { return };
        let mut state = self.ahead.lock();
        if self.range.end < block.range.end && state.generation == self.generation {
            state.ready.push_front(block);
        } else {
            // Read to its end (or from an earlier plan): its buffer serves a later block.
            state.spare.push(block.data);
            self.ahead.wake.notify_one();
        }
    }
}

/// The block of file `index` that holds `offset`: whole [`BLOCK`]s from its used range's
/// start, the last one cut at the range's end. None if `offset` is not used.
fn block_holding(view: &View, index: usize, offset: u64) -> Option<Range<u64>> {
    let used = view.used(index)?.containing(offset)?;
    let start = used.start + (offset - used.start) / BLOCK * BLOCK;
    Some(start..used.end.min(start.saturating_add(BLOCK)))
}

#[cfg(test)]
mod tests;
