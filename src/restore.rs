//! `imgstream restore`: a raw image on stdin written to a file or block device.

use crate::cli::RestoreArgs;
use crate::size::human;
use crate::{Failure, progress};
use imgstream_restore::{OpenOptions, Target, TargetKind, ZeroMode};

pub(crate) fn run(args: &RestoreArgs) -> Result<(), Failure> {
    let mut input = crate::input::stdin_stream("borg extract --stdout ... | imgstream restore TARGET")?;
    let expected = known_length(args, &mut input)?;
    let existing = crate::target::existing(&args.target)?;
    if existing.as_ref().is_some_and(|m| m.is_file() && m.len() > 0) && !args.force {
        return Err(Failure::usage(format!(
            "{} exists and is not empty: use --force to replace it",
            args.target.display()
        )));
    }
    let started = std::time::Instant::now();
    let result =
        crate::target::removed_unless_complete(&args.target, existing.is_some(), || write(args, &mut input, expected));
    let (report, target) = result?;
    let seconds = started.elapsed().as_secs_f64();
    let rate = if seconds > 0.0 { human((report.total as f64 / seconds) as u64) + "/s" } else { "-".into() };
    crate::note(&format!(
        "restored {} to {} in {seconds:.2} s ({rate}); wrote {}, {} of zeros {}",
        human(report.total),
        args.target.display(),
        human(report.data),
        human(report.zeros),
        zero_words(target.kind(), target.zero_mode())
    ));
    Ok(())
}

/// The stream length, as far as it is known before the first write: `--size`, or what is left
/// of stdin when it is a regular file. Both given must agree.
fn known_length(args: &RestoreArgs, input: &mut std::fs::File) -> Result<Option<u64>, Failure> {
    let stdin_failed = |e: std::io::Error| Failure::new(format!("stdin: {e}"));
    let metadata = input.metadata().map_err(stdin_failed)?;
    let in_file = if metadata.is_file() {
        Some(metadata.len().saturating_sub(std::io::Seek::stream_position(input).map_err(stdin_failed)?))
    } else {
        None
    };
    match (args.size, in_file) {
        (Some(size), Some(len)) if size != len => Err(Failure::new(format!(
            "--size {size} but stdin holds {len} bytes: nothing was written to {}",
            args.target.display()
        ))),
        (size, len) => Ok(size.or(len)),
    }
}

/// Opens the target and copies the stream into it; a stream that cannot fit is refused before
/// the first write.
fn write(
    args: &RestoreArgs,
    input: &mut std::fs::File,
    expected: Option<u64>,
) -> Result<(imgstream_restore::Report, Target), Failure> {
    let target = Target::open(
        &args.target,
        OpenOptions { sparse: args.sparse, assume_zeroed: args.assume_zeroed, file_len: None },
    )?;
    // A device takes a stream of its own size, unless --size says otherwise.
    let expected = match (expected, target.capacity()) {
        (Some(len), Some(capacity)) if args.size.is_none() && len < capacity => {
            return Err(Failure::new(format!(
                "stdin holds {len} bytes, {} has {capacity}: give --size {len} to write it to the start of the device; nothing was written",
                args.target.display()
            )));
        }
        (expected, capacity) => expected.or(capacity),
    };
    let progress = progress::reporter(args.progress, expected);
    let report = imgstream_restore::write_stream(
        &target,
        input,
        0,
        expected,
        imgstream_restore::DEFAULT_BLOCK_SIZE,
        progress.as_ref(),
    );
    drop(progress);
    let report = report.map_err(|e| hint_size(e, args))?;
    // An empty stream is what a failure upstream in a plain pipe leaves.
    if report.total == 0 && args.size != Some(0) {
        return Err(Failure::new(format!(
            "the image stream is empty: nothing to restore to {} (--size 0 writes an empty image)",
            args.target.display()
        )));
    }
    target.finish(report.total)?;
    Ok((report, target))
}

/// A stream that ends before the device it was sized by is most likely the image of a
/// smaller partition (`borg extract --stdout REPO::NAME partN.img`): say how to write it.
fn hint_size(error: imgstream_restore::Error, args: &RestoreArgs) -> Failure {
    let sized_by_device = args.size.is_none() && matches!(error, imgstream_restore::Error::Short { .. });
    let failure = Failure::from(error);
    if sized_by_device {
        failure.followed_by(
            "an image smaller than the device needs --size BYTES (a backup-disk partition's size is in its manifest.json)",
        )
    } else {
        failure
    }
}

/// How zero runs were handled, for the summary.
pub(crate) fn zero_words(kind: TargetKind, mode: ZeroMode) -> &'static str {
    match (kind, mode) {
        (_, ZeroMode::Write) => "written",
        (TargetKind::File, ZeroMode::Skip) => "left as holes",
        (TargetKind::BlockDevice, ZeroMode::Skip) => "skipped (--assume-zeroed)",
        (_, ZeroMode::ZeroOut) => "zeroed out (BLKZEROOUT)",
    }
}
