//! Examples of embedding Moat live in this package.
