//! The provider over real gRPC against the simulator over real HTTP: every RPC, the invariants
//! (also under a real manager's timing and randomized interleavings), the server (mTLS, health,
//! metrics), topologies, Refresh, the node controller's refresh generations, the wire
//! compatibility of CA 1.29-1.36, and the Cloudify client.

mod ambiguous_ids;
mod cloudify_client;
mod cloudify_tls;
mod deployment_lifecycle;
mod incremental;
mod interleavings;
mod invariants;
mod manager_timing;
mod node_controller;
mod proto_compat;
mod refresh;
mod rpcs;
mod server;
mod topologies;
mod two_vm_groups;
