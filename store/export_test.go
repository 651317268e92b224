package store

// Queued returns how many writes wait for the commit in flight.
func Queued(db *DB) int { return db.queued() }
