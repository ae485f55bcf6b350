//! One running pipeline, three languages: the W2 fraud detector swapped
//! from Rust to Python to JavaScript mid-stream through the control plane.
//! The windows carry over (migrated from the Rust plugin's compact
//! encoding to JSON at the first swap), so the alerts are the reference.

use std::time::Duration;

use serde_json::json;
use weir::connectors::write_generator_value;
use weir_test_artifacts::FRAUD_DETECTOR;

use crate::js::fraud_detector_js;
use crate::python::fraud_detector_py;
use crate::recovery::model_alerts;
use crate::run_pipeline::assert_reference_alerts;
use crate::serve::{Server, committed_output, send};

const EVENTS: u64 = 1_000_000;

/// Generator events `from..to` as JSON lines.
fn generated(from: u64, to: u64) -> Vec<u8> {
    let mut body = Vec::new();
    for i in from..to {
        write_generator_value(i, &mut body);
        body.push(b'\n');
    }
    body
}

#[test]
fn a_pipeline_swaps_from_rust_to_python_to_javascript_and_keeps_its_windows() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let rust = server.upload(FRAUD_DETECTOR, "fraud-rs");
    let python = server.upload(fraud_detector_py(), "fraud-py");
    let js = server.upload(fraud_detector_js(), "fraud-js");
    let out = dir.path().join("alerts.jsonl");
    let config = json!({"threshold": 5, "window_ms": 60000});
    let (code, created) = server.json(
        "POST",
        "/v1/pipelines",
        &json!({
            "name": "fraud",
            "parallelism": 2,
            "source": {"kind": "http"},
            "event_time": {"field": "/ts"},
            "key_by": {"field": "/user_id"},
            "plugin": {"digest": rust, "config": config},
            "checkpoint": {"interval_ms": 200},
            // JavaScript batches take longer than the 100 ms default.
            "limits": {"call_timeout_ms": 5000},
            "sink": [{"output": "alerts", "kind": "file", "path": out}],
        }),
    );
    assert_eq!(code, 201, "{created}");

    let phases = [
        (0, 400_000, None),
        (400_000, 700_000, Some(&python)),
        (700_000, EVENTS, Some(&js)),
    ];
    for (from, to, swap_to) in phases {
        if let Some(digest) = swap_to {
            let (code, swapped) = server.json(
                "PUT",
                "/v1/pipelines/fraud/plugin",
                &json!({"digest": digest, "config": config}),
            );
            assert_eq!(code, 200, "swap at event {from}: {swapped}");
            let plugin = &server.status("fraud")["plugin"];
            assert_eq!(plugin["digest"], digest.as_str());
            // JSON windows since the first swap (the Rust plugin's are version 0).
            assert_eq!(plugin["state_version"], 1, "{plugin}");
        }
        for start in (from..to).step_by(50_000) {
            let end = (start + 50_000).min(to);
            assert_eq!(send(&server, "fraud", &generated(start, end)), end - start);
        }
        // Each language reads exactly its share before the next swap.
        server.wait_for("fraud", Duration::from_secs(300), |s| {
            s["events_in"].as_u64().unwrap() >= to
        });
    }
    let status = server.wait_for("fraud", Duration::from_secs(300), |s| {
        s["outputs"]["alerts"].as_u64().unwrap_or(0) >= 2_056
    });
    assert!(
        status["errors"].as_object().is_none_or(|e| e.is_empty()),
        "{status}"
    );

    assert_reference_alerts(&committed_output(&server, "fraud", &out, 2_056));
    // The check can fail: had the first swap dropped the windows, the
    // alerts would differ.
    assert_ne!(model_alerts(EVENTS, |_| 5, Some(400_000)).len(), 2_056);
}
