//! dirhost: a directory-driven hosting manager for Debian (see README.md and ARCHITECTURE.md).
//!
//! The library holds the whole pipeline (model → render → plan → apply) so that the CLI, the
//! daemon and the tests all drive the same code.

pub mod acme;
pub mod apply;
pub mod certs;
pub mod checksum;
pub mod cli;
pub mod clidoc;
pub mod config;
pub mod daemon;
pub mod dns;
pub mod doctor;
pub mod fuzzing;
pub mod hooks;
pub mod kernelwatch;
pub mod lockfile;
pub mod logwriter;
pub mod mail;
pub mod model;
pub mod net;
pub mod php;
pub mod plan;
pub mod progress;
pub mod reconcile;
pub mod render;
pub mod safefs;
pub mod sandbox;
pub mod site;
pub mod stats;
pub mod watch;
pub mod webmail;
