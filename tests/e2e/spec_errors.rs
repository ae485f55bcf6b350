//! Bad specs fail before anything runs, naming the field.

use crate::support::{toml_path, weir_run};
use weir_test_artifacts::PASSTHROUGH;

fn good() -> String {
    format!(
        r#"
name = "p"
parallelism = 1
[source]
kind = "generator"
events = 10
[key_by]
field = "/user_id"
[plugin]
wasm = {wasm}
[[sink]]
output = "main"
kind = "file"
path = "out.jsonl"
"#,
        wasm = toml_path(PASSTHROUGH)
    )
}

fn assert_rejected(spec: &str, files: &[(&str, &str)], expected: &[&str]) {
    let run = weir_run(spec, files);
    assert!(!run.succeeded(), "a bad spec ran:\n{spec}");
    let stderr = run.stderr();
    for fragment in expected {
        assert!(
            stderr.contains(fragment),
            "expected {fragment:?} in:\n{stderr}"
        );
    }
    assert!(
        !run.path("out.jsonl").exists(),
        "nothing may run before the spec is checked"
    );
}

#[test]
fn the_good_spec_runs() {
    let run = weir_run(&good(), &[]);
    assert!(run.succeeded(), "{}", run.stderr());
}

#[test]
fn an_unknown_source_kind_is_rejected() {
    assert_rejected(
        &good().replace("\"generator\"", "\"kafkaa\""),
        &[],
        &["source", "kafkaa", "generator"],
    );
}

#[test]
fn a_missing_plugin_is_rejected() {
    let spec = good().replace("[plugin]\nwasm", "[xplugin]\nwasm");
    assert_rejected(&spec, &[], &["plugin"]);
}

#[test]
fn a_bad_json_pointer_is_rejected() {
    assert_rejected(
        &good().replace("\"/user_id\"", "\"user_id\""),
        &[],
        &["key_by.field", "'/'"],
    );
}

#[test]
fn zero_parallelism_is_rejected() {
    assert_rejected(
        &good().replace("parallelism = 1", "parallelism = 0"),
        &[],
        &["parallelism", "between 1 and 128"],
    );
}

#[test]
fn a_missing_component_file_is_rejected() {
    let spec = good().replace(&toml_path(PASSTHROUGH), "\"nowhere.wasm\"");
    assert_rejected(&spec, &[], &["nowhere.wasm"]);
}

#[test]
fn bytes_that_are_not_a_component_are_rejected() {
    let spec = good().replace(&toml_path(PASSTHROUGH), "\"junk.wasm\"");
    assert_rejected(
        &spec,
        &[("junk.wasm", "definitely not wasm")],
        &["not a WebAssembly component"],
    );
}
