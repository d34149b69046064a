//! One module per subcommand: its arguments and what it does.
pub mod audit;
pub mod counters;
pub mod docs;
pub mod doctor;
pub mod export;
pub mod genkey;
pub mod import;
pub mod keys;
pub mod load;
pub mod monitor;
pub mod policy;
pub mod reload;
pub mod run;
pub mod show;
pub mod unload;
