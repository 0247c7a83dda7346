//! `seed`: a synthetic library written to Redis.

use std::time::Instant;

use anyhow::Context;
use metafuse_testkit::{Library, LibrarySpec};

/// FLUSHDB, then writes the library writer-style.
pub(crate) fn seed_library(
    url: &str,
    spec: &LibrarySpec,
    maxlen: Option<usize>,
    prefix: &str,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let library = Library::generate(spec);
    let generated = started.elapsed();
    let client = redis::Client::open(url).with_context(|| format!("invalid redis url {url:?}"))?;
    let mut connection = client.get_connection().context("cannot connect to redis")?;
    redis::cmd("FLUSHDB")
        .query::<()>(&mut connection)
        .context("FLUSHDB failed")?;
    library
        .write_all(&mut connection, prefix, maxlen)
        .context("writing the library failed")?;
    let length: u64 = redis::cmd("XLEN")
        .arg(metafuse_stream::EVENTS_STREAM)
        .query(&mut connection)?;
    println!(
        "seeded {} files: {} writes, {} stream entries kept (generated in {:.2} s, written in {:.2} s)",
        spec.n_files,
        library.writes.len(),
        length,
        generated.as_secs_f64(),
        (started.elapsed() - generated).as_secs_f64(),
    );
    Ok(())
}
