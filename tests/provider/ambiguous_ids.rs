//! Provider ids several instances render (issue 20 item 2): two managers whose tenants,
//! deployments and VM ids are the same (two simulators with one seed), under a template that
//! does not name the manager. Such an id tells nothing about which VM CA means, so it is never
//! acted on: NodeGroupForNode answers no group, DeleteNodes refuses it before any Cloudify call,
//! and a gauge counts them.

use crate::provider_support::*;
use cloudify_sim::{Scenario, Timing};

fn twin() -> Scenario {
    Scenario::default_demo()
        .with_timing(Timing::instant())
        .with_seed(5)
}

#[tokio::test]
async fn a_provider_id_two_instances_render_is_never_acted_on() {
    let (mut env, west) = start_two_managers(twin(), twin(), "").await;
    let east_group = "east:k8s-pool-a/workers";
    let ids: Vec<String> = env
        .nodes(east_group)
        .await
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids.len(), 2);
    let west_ids: Vec<String> = env
        .nodes("west:k8s-pool-a/workers")
        .await
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids, west_ids, "the same ids on both managers");
    assert_eq!(
        env.group_for(&ids[0], "").await,
        "",
        "an ambiguous id belongs to no group"
    );
    for group in [east_group, "west:k8s-pool-a/workers"] {
        let refused = env.delete(group, &[&ids[0]]).await.expect_err("ambiguous");
        assert_eq!(
            refused.code(),
            tonic::Code::FailedPrecondition,
            "{refused:?}"
        );
        assert!(
            refused.message().contains("rendered by 2 instances"),
            "{refused:?}"
        );
    }
    assert_eq!(env.route_count("POST /api/v3.1/executions").await, 0);
    let west_posts = west.control().requests().await.expect("west requests");
    assert_eq!(west_posts.routes.get("POST /api/v3.1/executions"), None);
    assert_eq!(env.app.metrics.ambiguous_provider_ids.get(), 2);
    env.shutdown().await;
    west.shutdown().await;
}
