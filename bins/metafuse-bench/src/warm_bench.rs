//! `metafuse-bench warm`: warm restarts from a checkpoint (time to a
//! serving tree) and the API-mode cold bootstrap against the meta-core
//! double, beside the old design's API-mode approach (replay the stream,
//! one GET per relevant event, in sequence) on the same data, same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use metafuse_metacore::{MetaCoreConfig, MetaCoreSource};
use metafuse_service::{Service, ServiceConfig};
use metafuse_state::{Projection, encode_checkpoint, parse_event_key};
use metafuse_stream::{MetadataSource, RedisSource, Rules, Strategy};
use metafuse_testkit::{MetaCoreDouble, MetaCoreDoubleConfig, RedisServer, Writer};

/// What `warm` measures.
#[derive(Debug, clap::Args)]
pub struct WarmArgs {
    /// Library sizes of the warm-restart figure (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [100_000_usize, 1_000_000])]
    warm_files: Vec<usize>,
    /// Library size of the API-mode cold bootstrap (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    api_files: usize,
    /// Stop the old design after this many events and extrapolate (it
    /// sends one request per event in sequence).
    #[arg(long, default_value_t = 20_000)]
    baseline_limit: usize,
}

/// The properties a media file has (the default rules' relevant ones and
/// one they ignore).
fn file_properties(index: usize) -> [(&'static str, String); 7] {
    [
        ("filePath", format!("downloads/{index:07}.mkv")),
        ("title", format!("Title {index}")),
        ("movieYear", format!("{}", 1950 + index % 70)),
        ("fileType", "video".to_owned()),
        ("extension", "mkv".to_owned()),
        ("size", format!("{}", 1_000_000 + index)),
        ("plot", "not relevant to the rules".to_owned()),
    ]
}

fn hash_id(index: usize) -> String {
    format!("{index:032x}")
}

/// Runs every measurement and prints the figures.
pub fn run(runtime: &tokio::runtime::Runtime, arguments: WarmArgs) -> anyhow::Result<()> {
    for n_files in arguments.warm_files.iter().filter(|n_files| **n_files > 0) {
        runtime.block_on(warm_restart(*n_files))?;
    }
    if arguments.api_files > 0 {
        runtime.block_on(api_cold_bootstrap(
            arguments.api_files,
            arguments.baseline_limit,
        ))?;
    }
    Ok(())
}

/// A checkpoint of `n_files` against a real Redis (its identity, an event
/// it holds), then `Service::start` to a serving tree.
async fn warm_restart(n_files: usize) -> anyhow::Result<()> {
    let redis = RedisServer::start().context("redis-server")?;
    let mut connection = redis.client().get_connection()?;
    let event_id = Writer::new(&mut connection, "")
        .set("0", "title", "one event so there is a position")
        .flush()?
        .context("event id")?;
    let mut source = RedisSource::connect(&redis.url(), "", Strategy::Auto).await?;
    let identity = source.identity().await?;
    let rules = Rules::preset("default")?;
    let mut projection = Projection::new(rules.relevant_properties());
    for index in 0..n_files {
        let hash_id = hash_id(index);
        for (name, value) in file_properties(index) {
            projection.apply(&hash_id, name, Some(&value));
        }
    }
    let directory = tempfile::tempdir()?;
    let state_dir = directory.path().join("state");
    std::fs::create_dir_all(&state_dir)?;
    let started = Instant::now();
    let bytes = encode_checkpoint(&projection, &event_id, &identity);
    let encoded = started.elapsed();
    drop(projection);
    let started = Instant::now();
    std::fs::write(state_dir.join("metafuse.checkpoint"), &bytes)?;
    let written = started.elapsed();
    // The two CPU stages of a warm start on their own: decode, tree build.
    let decode_started = Instant::now();
    let decoded = metafuse_state::decode_checkpoint(&bytes)?;
    let decoded_in = decode_started.elapsed();
    let build_started = Instant::now();
    let library = metafuse_vfs::Library::from_projection(decoded.projection, Arc::new(rules));
    let built_in = build_started.elapsed();
    let n_directories = library.directory_count();
    drop(library);

    let mut config = ServiceConfig::new(
        directory.path().join("rules.json"),
        directory.path().join("files"),
    );
    config.discovery.redis_url = Some(redis.url());
    config.discovery.beacon = None;
    config.state_dir = Some(state_dir);
    let started = Instant::now();
    let service = Service::start(config).await?;
    let to_serving = started.elapsed();
    let method = service.bootstrap_method().unwrap_or_default();
    let n_served = service.library().read().file_count();
    println!(
        "warm restart {n_files} files: {} to a serving tree via {method} ({n_served} files); \
         checkpoint {:.1} MB, encode {}, write {}; alone: decode {}, tree build {} \
         ({n_directories} directories)",
        millis(to_serving),
        bytes.len() as f64 / 1e6,
        millis(encoded),
        millis(written),
        millis(decoded_in),
        millis(built_in),
    );
    // Dropping the service is enough: no shutdown checkpoint here.
    drop(service);
    Ok(())
}

/// Seeds `n_files` writer-style, then times meta-core's API-mode bootstrap
/// (ours) and the old design's replay with one GET per relevant event.
async fn api_cold_bootstrap(n_files: usize, baseline_limit: usize) -> anyhow::Result<()> {
    let redis = RedisServer::start().context("redis-server")?;
    let mut connection = redis.client().get_connection()?;
    let seed_started = Instant::now();
    let mut writer = Writer::new(&mut connection, "");
    for index in 0..n_files {
        let properties = file_properties(index);
        let borrowed: Vec<(&str, &str)> = properties
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        writer.set_file(&hash_id(index), &borrowed);
        if index % 1000 == 999 {
            writer.flush()?;
        }
    }
    writer.flush()?;
    println!(
        "seeded {n_files} files ({} events) in {}",
        n_files * 7,
        millis(seed_started.elapsed())
    );
    // The API-mode bootstrap re-reads every key named by events of the
    // last `start_margin` (10 s, for clock skew); a library seeded within
    // it would be read twice, which no real start sees.
    tokio::time::sleep(MetaCoreConfig::new("http://unused").start_margin + Duration::from_secs(1))
        .await;
    let double = MetaCoreDouble::start(MetaCoreDoubleConfig::new(redis.url())).await?;
    let relevant = Rules::preset("default")?.relevant_properties();

    let mut source = MetaCoreSource::new(MetaCoreConfig::new(double.url()));
    let mut projection = Projection::new(relevant.clone());
    let report = source.bootstrap(&mut projection, &|_| {}).await?;
    println!(
        "API-mode cold bootstrap {n_files} files: {} ({} complete files, {} values kept, {} requests)",
        millis(report.elapsed),
        projection.complete_count(),
        report.n_fetched,
        double.requests().len(),
    );
    drop(projection);
    drop(source);

    // The old design: every retained event from the start, and for each
    // relevant one a GET of its value, one after another. The events are
    // read with XRANGE (what the SSE replay carries); the GETs dominate.
    let client = metafuse_http::HttpClient::new(metafuse_http::HttpClientConfig::default());
    let started = Instant::now();
    let entries: Vec<(String, std::collections::HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg("meta:events")
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(baseline_limit)
        .query(&mut connection)?;
    let mut baseline = Projection::new(relevant.clone());
    let mut n_events = 0_usize;
    let mut n_gets = 0_usize;
    for (_id, fields) in &entries {
        n_events += 1;
        let Some(key) = fields.get("key") else {
            continue;
        };
        let Ok((hash_id, property)) = parse_event_key(key, "") else {
            continue;
        };
        if !relevant.is_relevant(property) {
            continue;
        }
        let response = client
            .get(&format!("{}/meta/{hash_id}/{property}", double.url()), &[])
            .await?;
        n_gets += 1;
        let value =
            (response.status == 200).then(|| String::from_utf8_lossy(&response.body).into_owned());
        baseline.apply(hash_id, property, value.as_deref());
    }
    let elapsed = started.elapsed();
    let total_events = n_files * 7;
    let extrapolated = elapsed.as_secs_f64() * total_events as f64 / n_events.max(1) as f64;
    println!(
        "old design (replay + one GET per relevant event): {n_events} events, {n_gets} GETs in {} \
         → {extrapolated:.1} s extrapolated to {total_events} events (and incomplete once \
         meta-core trims the stream at ~100k entries)",
        millis(elapsed)
    );
    Ok(())
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}
