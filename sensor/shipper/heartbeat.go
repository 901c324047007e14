package shipper

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/internal/logkey"
)

// HeartbeatSender delivers a heartbeat. *client.Client implements it.
type HeartbeatSender interface {
	Heartbeat(ctx context.Context, hb api.Heartbeat) (api.HeartbeatResponse, error)
}

// RunHeartbeat sends build() every interval (±10% jitter, the collector may
// ask for another interval) until ctx is done. Failures are logged at debug
// only: the shipper already reports an unreachable collector.
func RunHeartbeat(ctx context.Context, hs HeartbeatSender, build func() api.Heartbeat, interval time.Duration, log *slog.Logger) {
	for {
		resp, err := hs.Heartbeat(ctx, build())
		if err != nil && ctx.Err() == nil {
			log.Debug("heartbeat failed", logkey.Error, err)
		} else if err == nil && resp.IntervalSeconds > 0 {
			interval = time.Duration(resp.IntervalSeconds) * time.Second
		}
		wait := interval - interval/10 + rand.N(interval/5+1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
