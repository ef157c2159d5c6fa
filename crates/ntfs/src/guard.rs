//! The last line of defence around the `ntfs` crate: a panic becomes [`Error::Panicked`].
//!
//! We validate the boot sector, bound record and index sizes, and bound every walk before the
//! crate sees the data, so that hostile input gives a clear error. The crate still has
//! `unwrap`s, asserts and unchecked arithmetic on on-disk values that we cannot reach from
//! outside; rule 4 of imgstream (bad input gives an error, never a panic) is kept by catching
//! any panic here and reporting the metadata as corrupt. Nothing shared is left half-updated by
//! an unwinding analysis: it owns all its state, which is dropped.

use crate::error::Error;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Runs `analysis`, turning a panic into a corruption error about `context`.
pub(crate) fn no_panic<T>(context: &str, analysis: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    catch_unwind(AssertUnwindSafe(analysis)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(Error::Panicked { context: context.to_owned(), message })
    })
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_a_corruption_error() {
        let error = no_panic::<()>("test", || panic!("boom {}", 1)).unwrap_err();
        assert_eq!(error.to_string(), "test: the metadata is too damaged to parse (the ntfs crate panicked: boom 1)");
        assert_eq!(no_panic("test", || Ok(5)).unwrap(), 5);
    }
}
