//! Games moved between nodes as batches of records, merged by `game_id`.
