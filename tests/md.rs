//! md RAID members (placeholder, filled below).
