//! The policy: its resolved model, the reference evaluator that defines its
//! meaning, and the compiler to kernel maps.
pub mod check;
pub mod compile;
pub mod diff;
pub mod lint;
pub mod matrix;
pub mod model;
pub mod reference;
pub mod space;
