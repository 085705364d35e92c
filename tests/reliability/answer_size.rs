//! Reliability suite: NodeGroupNodes answers stay within what CA accepts (issue 20 item 8). CA's
//! gRPC client refuses messages over 4 MiB (grpc-go's default), and NodeGroupNodes lists every
//! instance of a group: at about 65k instances one group's answer passed it. A configured max
//! that could pass it is refused at load time, naming the key and the limit; a max that comes
//! from Cloudify (the scaling policy's `max_instances`) is lowered to it.

use std::collections::BTreeMap;

use crate::reliability_support::*;
use autoscaler_cloudify::config::{Config, Overrides};
use autoscaler_cloudify::nodegroup::ServiceSettings;
use autoscaler_cloudify::proto;
use autoscaler_cloudify::proto::cloud_provider_client::CloudProviderClient;
use cloudify_sim::Timing;
use prost::Message;

/// What grpc-go accepts by default, and so CA's externalgrpc client.
const CA_MAX_RECEIVE: usize = 4 * 1024 * 1024;

fn load(node_groups: &str) -> Result<Config, String> {
    let env = BTreeMap::from([("CLOUDIFY_PASSWORD".to_owned(), PASSWORD.to_owned())]);
    let yaml = format!("cloudify: [{{url: \"http://127.0.0.1:1\"}}]\nnode_groups: {node_groups}\n");
    Config::from_yaml(&yaml, &Overrides::default(), &env).map_err(|e| e.to_string())
}

/// Every configured max that could make one group's answer pass 4 MiB is refused, naming its
/// key and the largest max that fits; the defaults stay valid.
#[test]
fn a_configured_max_that_could_pass_4_mib_is_refused() {
    load("{auto_discovery: [\"cloudify:label=a=b\"]}").expect("the defaults fit");
    load("{static: [\"1:2000:d/g\"], unbounded_max: 2000}").expect("2000 fits");
    for (node_groups, key) in [
        (
            "{auto_discovery: [\"cloudify:label=a=b\"], unbounded_max: 1000000}",
            "node_groups.unbounded_max",
        ),
        ("{static: [\"1:70000:d/g\"]}", "node_groups.static[0]"),
        (
            "{groups: {\"d/g\": {max: 70000}}}",
            "node_groups.groups.\"d/g\".max",
        ),
        ("{defaults: {max: 70000}}", "node_groups.defaults.max"),
    ] {
        let e = load(node_groups).expect_err(node_groups);
        assert!(
            e.starts_with(&format!("{key}: ")) && e.contains("4 MiB") && e.contains("at most"),
            "{node_groups}: the error names the key, CA's limit and the largest max: {e}"
        );
    }
}

/// A group whose Cloudify policy says `max_instances: 1000000`, with ids as long as Cloudify
/// allows: the max CA is told leaves every answer of the group under 4 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_max_from_cloudify_is_lowered_to_what_fits_in_an_answer() {
    let deployment = "d".repeat(250);
    let group = "w".repeat(240);
    let mut s = scenario(Timing::instant());
    for d in &mut s.deployments {
        if d.id == "k8s-pool-a" {
            d.id = deployment.clone();
            for g in &mut d.scaling_groups {
                g.name = group.clone();
                g.max = 1_000_000;
                g.current = 1000;
                g.default = Some(1000);
            }
        }
    }
    let sim = start_sim(s).await;
    let config = loopback_config(
        &provider_yaml(&sim.url(), "1h", "0s", ""),
        Overrides::default(),
    );
    let app = start_inprocess(&config, ServiceSettings::default()).await;
    let mut ca = CloudProviderClient::connect(format!("http://{}", app.grpc.addr))
        .await
        .expect("connect");
    let id = format!("{deployment}/{group}");
    let max = ca
        .node_groups(req(proto::NodeGroupsRequest {}))
        .await
        .expect("node groups")
        .into_inner()
        .node_groups
        .into_iter()
        .find(|g| g.id == id)
        .expect("the group")
        .max_size;
    let answer = ca
        .node_group_nodes(req(proto::NodeGroupNodesRequest { id: id.clone() }))
        .await
        .expect("a default client takes the answer")
        .into_inner();
    assert_eq!(answer.instances.len(), 1000);
    let per_instance = answer.encoded_len() / answer.instances.len();
    let fits = CA_MAX_RECEIVE / per_instance;
    figure(
        "answer-size",
        &format!(
            "{per_instance} bytes per instance with {}-byte ids: {fits} fit in 4 MiB; the \
             policy's max_instances 1000000 is served as max {max}",
            answer.instances[0].id.len()
        ),
    );
    assert!(
        (1000..=fits as i32).contains(&max),
        "max {max}: at max the group's answer must stay under 4 MiB ({fits} instances fit)"
    );
    app.shutdown().await;
}
