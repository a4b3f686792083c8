//! shutdown (todo)
