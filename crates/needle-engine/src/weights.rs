//! (stub) to be implemented.
