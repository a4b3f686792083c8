//! demo (todo)
