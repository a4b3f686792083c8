//! errors (todo)
