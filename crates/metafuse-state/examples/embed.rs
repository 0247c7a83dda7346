//! Another service embedding the projection: feed it values (here from a
//! plain list; in practice from a metafuse source), react to deltas, render
//! paths. Needs only the `metafuse-state` dependency.

use metafuse_state::{Delta, FetchedValue, Projection, Rules};

fn main() {
    let rules = Rules::preset("default").expect("shipped preset");
    let mut projection = Projection::new(rules.relevant_properties());
    let fetched = [
        FetchedValue {
            hash_id: "a1",
            property: "title",
            value: Some("Dark"),
        },
        FetchedValue {
            hash_id: "a1",
            property: "season",
            value: Some("01"),
        },
        FetchedValue {
            hash_id: "a1",
            property: "episode",
            value: Some("1"),
        },
        FetchedValue {
            hash_id: "a1",
            property: "filePath",
            value: Some("watch/Dark.S01E01.mkv"),
        },
        FetchedValue {
            hash_id: "a1",
            property: "audio/0/codec",
            value: Some("aac"),
        }, // not relevant: ignored
        FetchedValue {
            hash_id: "b2",
            property: "filePath",
            value: Some("watch/Heat.mkv"),
        },
        FetchedValue {
            hash_id: "b2",
            property: "filePath",
            value: None,
        }, // deleted in the same batch
    ];
    for delta in projection.apply_batch(fetched) {
        match delta {
            Delta::Visible(hash_id) => println!("show {hash_id}"),
            Delta::Changed(hash_id) => println!("recompute the path of {hash_id}"),
            Delta::Gone(hash_id) => println!("hide {hash_id}"),
        }
    }
    for (hash_id, file) in projection.complete_files() {
        let properties: Vec<String> = file
            .properties()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        println!("{hash_id}: {}", properties.join(", "));
        if let Some(rendered) = file.render(&rules) {
            println!("{hash_id} is shown at {}", rendered.path);
        }
    }
    let stats = projection.stats();
    println!("{} files, {} bytes", stats.file_count, stats.state_size);
}
