//! rewrite (being built).
