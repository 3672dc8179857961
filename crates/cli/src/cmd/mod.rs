//! One module per subcommand.

pub mod admin;
pub mod agent;
pub mod chat;
pub mod cleanup;
pub mod cp;
pub mod lifecycle;
pub mod network;
pub mod run;
pub mod sandbox;
pub mod serve;
pub mod shell;
pub mod table;
pub mod template;
pub mod term;
