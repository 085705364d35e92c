//! The node controller acts once per *completed* refresh (issue 15): the inventory's generation
//! moves only when every manager and page was read, so a manager outage never looks like
//! instances going away. Real HTTP to the simulator, which answers 503 while "down".

use std::sync::Arc;

use serde_json::json;
use testkit::env::*;

#[tokio::test]
async fn a_failed_refresh_is_not_a_new_generation() {
    let env = start_default().await;
    let rx = env.app.inventory.completed_refreshes();
    let (first, snap) = rx.borrow().clone();
    assert!(
        first >= 1 && snap.complete,
        "the first snapshot is generation 1"
    );

    env.app.inventory.refresh().await.expect("refresh works");
    let (second, good) = rx.borrow().clone();
    assert_eq!(second, first + 1);

    env.faults(json!({"down": true})).await;
    for _ in 0..3 {
        assert!(
            env.app.inventory.refresh().await.is_err(),
            "manager is down"
        );
    }
    let (during, same) = rx.borrow().clone();
    assert_eq!(during, second, "failed refreshes are no new generation");
    assert!(
        Arc::ptr_eq(&same, &good),
        "and the snapshot is the last complete one"
    );

    env.clear_faults().await;
    env.app.inventory.refresh().await.expect("manager is back");
    assert_eq!(rx.borrow().0, second + 1);
}

#[tokio::test]
async fn the_nodes_endpoint_says_when_the_controller_does_not_run() {
    let env = start_default().await;
    let url = format!("http://{}/nodes/some-node", env.app.http_addr);
    let resp = env
        .http
        .get(&url)
        .send()
        .await
        .expect("GET /nodes/some-node");
    assert_eq!(resp.status(), reqwest::StatusCode::NOT_FOUND);
    let body: serde_json::Value = resp.json().await.expect("json");
    let msg = body["error"].as_str().unwrap_or_default();
    assert!(msg.contains("node controller is not running"), "{body}");
}
