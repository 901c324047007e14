package fileactivity

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
)

// procCache remembers pid -> name and executable for a short while: an
// encryptor produces thousands of events per second from one pid, and two
// /proc reads per event would cost more than the event itself. The TTL keeps
// a reused pid from being misnamed for longer than that.
type procCache struct {
	root string
	max  int
	ttl  time.Duration
	now  func() time.Time

	mu sync.Mutex
	m  map[int]procEntry
}

type procEntry struct {
	name, exe string
	at        time.Time
}

func newProcCache(root string, max int, ttl time.Duration) *procCache {
	return &procCache{root: root, max: max, ttl: ttl, now: time.Now, m: map[int]procEntry{}}
}

// process returns the ECS process group for pid; name and executable are
// empty when the process is gone.
func (c *procCache) process(pid int) *event.Process {
	now := c.now()
	c.mu.Lock()
	e, ok := c.m[pid]
	c.mu.Unlock()
	if !ok || now.Sub(e.at) > c.ttl {
		dir := filepath.Join(c.root, strconv.Itoa(pid))
		e = procEntry{at: now}
		if b, err := os.ReadFile(filepath.Join(dir, "comm")); err == nil {
			e.name = strings.TrimSuffix(string(b), "\n")
		}
		if exe, err := os.Readlink(filepath.Join(dir, "exe")); err == nil {
			e.exe = strings.TrimSuffix(exe, " (deleted)")
		}
		c.mu.Lock()
		if len(c.m) >= c.max {
			clear(c.m) // simple bound; hot pids refill at once
		}
		c.m[pid] = e
		c.mu.Unlock()
	}
	return &event.Process{PID: int64(pid), Name: e.name, Executable: e.exe}
}
