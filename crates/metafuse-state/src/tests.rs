use std::collections::BTreeMap;

use metafuse_rules::RelevantProperties;

use crate::{Delta, EventCounts, FetchedValue, Projection, Stats};

fn projection(names: &[&str]) -> Projection {
    Projection::new(RelevantProperties::from_names(names.iter().copied()))
}

fn properties_of(projection: &Projection, hash_id: &str) -> BTreeMap<String, String> {
    projection
        .file(hash_id)
        .map(|file| {
            file.properties()
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn fetched<'v>(hash_id: &'v str, property: &'v str, value: Option<&'v str>) -> FetchedValue<'v> {
    FetchedValue {
        hash_id,
        property,
        value,
    }
}

#[test]
fn file_path_makes_a_file_visible_and_its_deletion_hides_it_keeping_the_rest() {
    let mut state = projection(&["title"]);
    assert_eq!(state.apply("a", "title", Some("Heat")), None);
    assert_eq!(state.file_count(), 1);
    assert_eq!(state.complete_count(), 0);
    assert_eq!(
        state.apply("a", "filePath", Some("watch/heat.mkv")),
        Some(Delta::Visible("a".into()))
    );
    assert_eq!(state.complete_count(), 1);
    assert_eq!(
        state.apply("a", "filePath", None),
        Some(Delta::Gone("a".into()))
    );
    assert_eq!(state.complete_count(), 0);
    assert_eq!(
        properties_of(&state, "a"),
        BTreeMap::from([("title".into(), "Heat".into())])
    );
    assert_eq!(
        state.apply("a", "filePath", Some("watch/heat2.mkv")),
        Some(Delta::Visible("a".into()))
    );
}

#[test]
fn empty_string_counts_as_absent() {
    let mut state = projection(&["title"]);
    assert_eq!(state.apply("a", "filePath", Some("")), None);
    assert_eq!(state.file_count(), 0);
    state.apply("a", "filePath", Some("p"));
    state.apply("a", "title", Some("Heat"));
    assert_eq!(
        state.apply("a", "title", Some("")),
        Some(Delta::Changed("a".into()))
    );
    assert_eq!(state.file("a").unwrap().get("title"), None);
    assert_eq!(
        state.apply("a", "filePath", Some("")),
        Some(Delta::Gone("a".into()))
    );
    assert_eq!(
        state.file_count(),
        0,
        "deleting the last property forgets the file"
    );
}

#[test]
fn any_change_of_a_complete_file_is_changed_but_rewriting_a_value_is_not() {
    let mut state = projection(&["title", "season"]);
    state.apply("a", "filePath", Some("p"));
    assert_eq!(
        state.apply("a", "title", Some("Dark")),
        Some(Delta::Changed("a".into()))
    );
    assert_eq!(state.apply("a", "title", Some("Dark")), None);
    assert_eq!(
        state.apply("a", "season", None),
        None,
        "deleting an absent property changes nothing"
    );
    assert_eq!(
        state.apply("a", "title", None),
        Some(Delta::Changed("a".into()))
    );
}

#[test]
fn irrelevant_properties_are_never_stored() {
    let mut state = projection(&["titles"]);
    assert_eq!(state.apply("a", "genre", Some("x")), None);
    assert_eq!(state.file_count(), 0);
    state.apply("a", "titles/eng", Some("Dark"));
    assert_eq!(state.file("a").unwrap().get("titles/eng"), Some("Dark"));
    assert_eq!(state.stats().properties_fetched, 1);
}

#[test]
fn a_batch_yields_the_net_change_of_each_file_once() {
    let mut state = projection(&["title"]);
    state.apply("gone", "filePath", Some("g"));
    state.apply("changed", "filePath", Some("c"));
    state.apply("flicker", "filePath", Some("f"));
    let deltas = state.apply_batch([
        fetched("new", "title", Some("t")),
        fetched("new", "filePath", Some("n")),
        fetched("new", "title", Some("u")),
        fetched("gone", "filePath", None),
        fetched("changed", "title", Some("t")),
        fetched("flicker", "filePath", None),
        fetched("flicker", "filePath", Some("f2")),
        fetched("never", "title", Some("t")),
        fetched("born-and-died", "filePath", Some("x")),
        fetched("born-and-died", "filePath", None),
    ]);
    assert_eq!(
        deltas,
        vec![
            Delta::Visible("new".into()),
            Delta::Gone("gone".into()),
            Delta::Changed("changed".into()),
            Delta::Changed("flicker".into()),
        ]
    );
    assert_eq!(state.complete_count(), 3);
    assert_eq!(state.file_count(), 4);
}

#[test]
fn complete_files_lists_only_files_with_a_path() {
    let mut state = projection(&["title"]);
    state.apply("a", "filePath", Some("p"));
    state.apply("b", "title", Some("t"));
    let complete: Vec<&str> = state.complete_files().map(|(hash_id, _)| hash_id).collect();
    assert_eq!(complete, vec!["a"]);
    assert!(state.file("a").unwrap().is_complete());
    assert!(!state.file("b").unwrap().is_complete());
    assert_eq!(state.file("a").unwrap().hash_id(), "a");
}

#[test]
fn narrowing_the_relevant_set_drops_properties_and_growing_it_plans_fetches() {
    let mut state = projection(&["title", "season"]);
    state.apply("a", "filePath", Some("p"));
    state.apply("a", "title", Some("t"));
    state.apply("a", "season", Some("1"));
    state.apply("b", "season", Some("2"));
    let plan = state.set_relevant(RelevantProperties::from_names(["title", "titles/eng"]));
    assert_eq!(state.file("a").unwrap().get("season"), None);
    assert_eq!(state.file("a").unwrap().get("title"), Some("t"));
    assert!(
        state.file("b").is_none(),
        "a file left without relevant properties is forgotten"
    );
    assert_eq!(state.complete_count(), 1);
    assert_eq!(plan.hash_ids, vec!["a".to_string()]);
    assert_eq!(
        plan.properties,
        vec!["titles".to_string(), "titles/eng".to_string()]
    );
    assert_eq!(plan.nested_prefixes, vec!["titles/eng".to_string()]);
    let keys: Vec<String> = plan.exact_keys("mm:").map(|(_, _, key)| key).collect();
    assert_eq!(
        keys,
        vec![
            "mm:file:a/titles".to_string(),
            "mm:file:a/titles/eng".to_string()
        ]
    );
    // A name that became relevant again is accepted from now on.
    assert_eq!(
        state.apply("a", "titles/eng", Some("x")),
        Some(Delta::Changed("a".into()))
    );
    assert!(
        state
            .set_relevant(RelevantProperties::from_names(["title", "titles/eng"]))
            .is_empty()
    );
}

#[test]
fn stats_count_and_size_grows_with_files() {
    let mut state = projection(&["title"]);
    let empty_size = state.stats().state_size;
    for index in 0..100 {
        state.apply(
            &format!("{index:032x}"),
            "filePath",
            Some("watch/some/file.mkv"),
        );
    }
    state.record_events(
        EventCounts {
            n_events: 150,
            n_skipped: 40,
            n_malformed: 2,
        },
        "5-0",
    );
    state.record_events(
        EventCounts {
            n_events: 1,
            n_skipped: 0,
            n_malformed: 0,
        },
        "6-0",
    );
    let stats = state.stats();
    assert_eq!(stats.events_processed, 151);
    assert_eq!(stats.properties_skipped, 40);
    assert_eq!(stats.malformed_entries, 2);
    assert_eq!(stats.properties_fetched, 100);
    assert_eq!(stats.files_complete, 100);
    assert_eq!(stats.file_count, 100);
    assert_eq!(stats.last_event_id.as_deref(), Some("6-0"));
    assert!(stats.state_size > empty_size + 100 * (32 + 19));
}

#[test]
fn projection_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Projection>();
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    struct Operation {
        file: u8,
        property: u8,
        value: Option<u8>,
    }

    const PROPERTIES: [&str; 4] = ["filePath", "title", "genre", "titles/eng"];
    const ALL_PROPERTIES: [&str; 7] = [
        "filePath",
        "title",
        "genre",
        "titles/eng",
        "titles",
        "season",
        "titles/fra",
    ];

    fn operations() -> impl Strategy<Value = Vec<Operation>> {
        prop::collection::vec(
            (0u8..4, 0u8..4, prop::option::of(0u8..3)).prop_map(|(file, property, value)| {
                Operation {
                    file,
                    property,
                    value,
                }
            }),
            0..60,
        )
    }

    /// Operations over every name of `ALL_PROPERTIES`.
    fn wide_operations() -> impl Strategy<Value = Vec<Operation>> {
        prop::collection::vec(
            (0u8..6, 0u8..7, prop::option::of(0u8..3)).prop_map(|(file, property, value)| {
                Operation {
                    file,
                    property,
                    value,
                }
            }),
            0..80,
        )
    }

    proptest! {
        /// The projection equals a naive map model, and the deltas of a
        /// batch lead from the visible set before to the visible set after.
        #[test]
        fn matches_a_naive_model(operations in operations(), split in 0usize..60) {
            let mut state = projection(&["title", "titles"]);
            let mut model: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
            let values: Vec<(String, &str, Option<String>)> = operations.iter().map(|operation| (
                format!("f{}", operation.file),
                PROPERTIES[operation.property as usize],
                operation.value.map(|value| if value == 0 { String::new() } else { format!("v{value}") }),
            )).collect();
            let split = split.min(values.len());
            for (hash_id, property, value) in &values[..split] {
                state.apply(hash_id, property, value.as_deref());
            }
            let visible_before: std::collections::BTreeSet<String> =
                state.complete_files().map(|(hash_id, _)| hash_id.to_owned()).collect();
            let deltas = state.apply_batch(values[split..].iter().map(|(hash_id, property, value)| {
                fetched(hash_id, property, value.as_deref())
            }));
            for (hash_id, property, value) in &values {
                if *property == "genre" { continue; }
                let file = model.entry(hash_id.clone()).or_default();
                match value.as_deref().filter(|value| !value.is_empty()) {
                    Some(value) => { file.insert((*property).to_owned(), value.to_owned()); }
                    None => { file.remove(*property); }
                }
            }
            model.retain(|_, file| !file.is_empty());
            let actual: BTreeMap<String, BTreeMap<String, String>> = state.files()
                .map(|(hash_id, _)| (hash_id.to_owned(), properties_of(&state, hash_id))).collect();
            prop_assert_eq!(&actual, &model);
            prop_assert_eq!(state.complete_count(), model.values().filter(|file| file.contains_key("filePath")).count());

            let mut visible = visible_before;
            let mut seen = std::collections::BTreeSet::new();
            for delta in &deltas {
                prop_assert!(seen.insert(delta.hash_id().to_owned()), "one delta per file");
                match delta {
                    Delta::Visible(hash_id) => prop_assert!(visible.insert(hash_id.clone())),
                    Delta::Gone(hash_id) => prop_assert!(visible.remove(hash_id)),
                    Delta::Changed(hash_id) => prop_assert!(visible.contains(hash_id)),
                }
            }
            let visible_after: std::collections::BTreeSet<String> =
                state.complete_files().map(|(hash_id, _)| hash_id.to_owned()).collect();
            prop_assert_eq!(visible, visible_after);
        }
        /// A rules change built aside (`plan_for` + `rebuilt`) leaves
        /// exactly what switching in place leaves (`set_relevant` to the
        /// union, the fetched values applied, `set_relevant` to the new
        /// set): the same names, byte for byte the same records, the same
        /// counters; and the same plan.
        #[test]
        fn a_rebuilt_projection_equals_one_changed_in_place(
            operations in wide_operations(),
            fetched_operations in wide_operations(),
            old_mask in 0u8..32,
            new_mask in 0u8..32,
        ) {
            const TRACKABLE: [&str; 5] = ["title", "genre", "titles", "titles/eng", "season"];
            let chosen = |mask: u8| -> Vec<&str> {
                TRACKABLE.iter().enumerate()
                    .filter(|(index, _)| mask & (1 << index) != 0)
                    .map(|(_, name)| *name)
                    .collect()
            };
            let to_value = |operation: &Operation| (
                format!("f{}", operation.file),
                ALL_PROPERTIES[operation.property as usize],
                operation.value.map(|value| if value == 0 { String::new() } else { format!("v{value}") }),
            );
            let old = RelevantProperties::from_names(chosen(old_mask));
            let new = RelevantProperties::from_names(chosen(new_mask));
            let union = RelevantProperties::from_names(old.names().chain(new.names()));
            let mut state = Projection::new(old);
            let before: Vec<_> = operations.iter().map(to_value).collect();
            state.apply_batch(before.iter().map(|(hash_id, property, value)| fetched(hash_id, property, value.as_deref())));
            let values: Vec<_> = fetched_operations.iter().map(to_value).collect();
            let batch = || values.iter().map(|(hash_id, property, value)| fetched(hash_id, property, value.as_deref()));

            let plan = state.plan_for(&union);
            let rebuilt = state.rebuilt(&union, batch(), new.clone());

            let mut in_place = state.clone();
            prop_assert_eq!(&plan, &in_place.set_relevant(union.clone()));
            in_place.apply_batch(batch());
            in_place.set_relevant(new);

            let raw = |projection: &Projection| {
                let (names, records) = projection.raw_parts();
                let mut records: Vec<Vec<u8>> = records.map(<[u8]>::to_vec).collect();
                records.sort();
                (names.to_vec(), records)
            };
            prop_assert_eq!(raw(&rebuilt), raw(&in_place));
            prop_assert_eq!(rebuilt.relevant(), in_place.relevant());
            let stats = |projection: &Projection| Stats { state_size: 0, ..projection.stats() };
            prop_assert_eq!(stats(&rebuilt), stats(&in_place));
            // Both accept and refuse the same names from now on.
            let mut rebuilt = rebuilt;
            for property in ALL_PROPERTIES {
                prop_assert_eq!(
                    rebuilt.apply("f9", property, Some("x")),
                    in_place.apply("f9", property, Some("x"))
                );
            }
        }
    }
}
