//! Block formats and the kernels that read them.
//!
//! Knows nothing about models: the engine asks for "dot product of this weight row with this
//! activation row" and this crate answers with the fastest variant the CPU can run, checked
//! against a scalar reference that stays in the tree forever.
