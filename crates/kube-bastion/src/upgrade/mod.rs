//! upgrade (being built).
