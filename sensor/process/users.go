package process

import (
	"os/user"
	"strconv"
	"sync"
)

// userCacheMax bounds the uid-to-name cache; a till has a handful of users,
// so reaching it means something odd and starting over is fine.
const userCacheMax = 4096

// userCache maps uids to user names, remembering misses too: every exec
// would otherwise re-read /etc/passwd (or ask NSS).
type userCache struct {
	mu     sync.Mutex
	names  map[int]string
	lookup func(uid string) (*user.User, error)
}

func newUserCache() *userCache {
	return &userCache{names: make(map[int]string), lookup: user.LookupId}
}

// name returns the user name of uid, or "" if it has none.
func (c *userCache) name(uid int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n, ok := c.names[uid]; ok {
		return n
	}
	var n string
	if u, err := c.lookup(strconv.Itoa(uid)); err == nil {
		n = u.Username
	}
	if len(c.names) >= userCacheMax {
		clear(c.names)
	}
	c.names[uid] = n
	return n
}
