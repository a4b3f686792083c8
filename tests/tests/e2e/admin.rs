//! admin (todo)
