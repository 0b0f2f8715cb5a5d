//! Shared helpers for the real-kernel integration tests.
