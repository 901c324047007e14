package sqlite

import (
	"context"
	"database/sql"
	"log/slog"
	"sync"
	"time"
)

// writerAutoCheckpoint is the writer's own checkpoint threshold, in WAL
// pages (SQLite's default is 1,000). The checkpointer normally keeps the
// WAL far below it; it is the bound on the WAL when the checkpointer falls
// behind, because a checkpoint the writer runs itself has no concurrent
// writes to chase and always finishes, letting the next write start the
// WAL over.
const writerAutoCheckpoint = 8192 // 32 MiB of 4 KiB pages

// checkpointEvery is how often the checkpointer runs without being kicked,
// for the writes other than ingest (heartbeats, commands).
const checkpointEvery = time.Second

// checkpointer copies the WAL back into the database file from a
// connection of its own. In SQLite's default the writer does it inside
// whichever commit crosses 1,000 WAL pages, which at full ingest was 2.4 s
// of a 22 s run on the single writer connection, every other write
// waiting behind it (bench/ingestbench). A PASSIVE checkpoint runs beside the writer
// and never blocks it or a reader.
type checkpointer struct {
	db   *sql.DB
	log  *slog.Logger
	kick chan struct{}
	done chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

func newCheckpointer(db *sql.DB, log *slog.Logger) *checkpointer {
	c := &checkpointer{db: db, log: log, kick: make(chan struct{}, 1), done: make(chan struct{})}
	c.wg.Add(1)
	go c.loop()
	return c
}

// wrote tells the checkpointer there are new WAL frames; it never blocks.
func (c *checkpointer) wrote() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *checkpointer) loop() {
	defer c.wg.Done()
	tick := time.NewTicker(checkpointEvery)
	defer tick.Stop()
	failing := false
	for {
		select {
		case <-c.done:
			return
		case <-c.kick:
		case <-tick.C:
		}
		err := c.checkpoint()
		switch {
		case err != nil && !failing:
			// Not fatal: the writer checkpoints itself past
			// writerAutoCheckpoint pages. Said once per failing streak.
			c.log.Warn("sqlite: background WAL checkpoint failed; the writer will checkpoint itself", "err", err)
			failing = true
		case err == nil && failing:
			c.log.Info("sqlite: background WAL checkpoint works again")
			failing = false
		}
	}
}

// checkpoint runs one PASSIVE checkpoint: it copies what no reader still
// needs and returns at once where it would have to wait.
func (c *checkpointer) checkpoint() error {
	var busy, logPages, done int
	return c.db.QueryRowContext(context.Background(), "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &logPages, &done)
}

// close stops the loop; SQLite checkpoints on the last connection's close.
func (c *checkpointer) close() error {
	c.once.Do(func() { close(c.done) })
	c.wg.Wait()
	return c.db.Close()
}
