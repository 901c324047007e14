package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"sync"
)

// groupCommit runs small writes from many requests in shared
// transactions: when a fleet acknowledges a kill-switch command at once,
// thousands of one-row updates would otherwise each pay for a transaction
// on the single writer connection. A write returns only after the
// transaction holding it committed, so it is as durable as on its own.
type groupCommit struct {
	db   *sql.DB
	reqs chan *groupWrite

	once sync.Once
	done chan struct{}
	wg   sync.WaitGroup
}

type groupWrite struct {
	fn  func(tx *sql.Tx) error
	err chan error
}

// maxGroup bounds the writes sharing one transaction.
const maxGroup = 512

// errStoreClosed is returned for writes submitted after Close.
var errStoreClosed = errors.New("sqlite: store closed")

func newGroupCommit(db *sql.DB) *groupCommit {
	g := &groupCommit{db: db, reqs: make(chan *groupWrite, maxGroup), done: make(chan struct{})}
	g.wg.Add(1)
	go g.loop()
	return g
}

// do runs fn inside a shared transaction and returns fn's error or the
// commit's. fn must only touch rows its caller owns: a failing fn does
// not undo the others (SQLite rolls back only the failed statement).
func (g *groupCommit) do(ctx context.Context, fn func(tx *sql.Tx) error) error {
	w := &groupWrite{fn: fn, err: make(chan error, 1)}
	select {
	case <-g.done:
		return errStoreClosed
	default:
	}
	select {
	case g.reqs <- w:
	case <-g.done:
		return errStoreClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-w.err:
		return err
	case <-g.done:
		// Closed while queued: the loop either ran this write (its answer
		// is buffered) or never will.
		g.wg.Wait()
		select {
		case err := <-w.err:
			return err
		default:
			return errStoreClosed
		}
	case <-ctx.Done():
		// The write may still commit; the caller retries idempotently.
		return ctx.Err()
	}
}

func (g *groupCommit) loop() {
	defer g.wg.Done()
	for {
		var first *groupWrite
		select {
		case first = <-g.reqs:
		case <-g.done:
			return
		}
		batch := []*groupWrite{first}
	drain:
		for len(batch) < maxGroup {
			select {
			case w := <-g.reqs:
				batch = append(batch, w)
			default:
				break drain
			}
		}
		g.run(batch)
	}
}

func (g *groupCommit) run(batch []*groupWrite) {
	tx, err := g.db.BeginTx(context.Background(), nil)
	if err != nil {
		for _, w := range batch {
			w.err <- err
		}
		return
	}
	errs := make([]error, len(batch))
	for i, w := range batch {
		errs[i] = w.fn(tx)
	}
	if err := tx.Commit(); err != nil {
		for _, w := range batch {
			w.err <- err
		}
		return
	}
	for i, w := range batch {
		w.err <- errs[i]
	}
}

// close stops the loop after the batch in flight; later writes fail.
func (g *groupCommit) close() {
	g.once.Do(func() { close(g.done) })
	g.wg.Wait()
}
