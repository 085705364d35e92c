//! Pools as Kubernetes objects (issue 22): the `CloudifyNodePool` resource ([`crd`]), the
//! decisions of its controller ([`plan`]), the controller itself ([`controller`], leader only)
//! and the registry every replica keeps of the pools the inventory serves as node groups
//! ([`registry`]).

pub mod controller;
pub mod crd;
pub mod plan;
pub mod registry;
