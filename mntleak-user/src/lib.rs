//! mntleak: explain mount-namespace leaks from kernel events.
//!
//! Sources (`live`, `capture`) produce one stream of [`model::Record`]s; the pure [`engine`]
//! reconstructs propagation history from it; [`report`] renders events and findings as text or JSON.

pub mod btf;
pub mod capture;
pub mod cli;
pub mod container;
pub mod decode;
pub mod engine;
pub mod holders;
pub mod live;
pub mod model;
pub mod pairing;
pub mod report;
pub mod snapshot;
pub mod source;
pub mod sys;
pub mod uapi;
