//! The simulator's integration tests, one binary: its REST surface, executions, the `scale`
//! workflow and a benchmark-scale scenario, all over real HTTP on 127.0.0.1.

mod api;
mod executions;
mod faults;
mod large;
mod scale;
mod support;
