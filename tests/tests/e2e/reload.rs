//! reload (todo)
