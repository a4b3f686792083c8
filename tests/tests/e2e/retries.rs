//! retries (todo)
