package app

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/tillwatch/tillwatch/collector/command"
	"github.com/tillwatch/tillwatch/collector/config"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/internal/killswitch"
	"github.com/tillwatch/tillwatch/internal/logkey"
)

// newCommandService loads (or, for the default path, creates) the signing
// key and the responder keys and builds the kill-switch service.
func newCommandService(cfg config.Config, st store.Store, log *slog.Logger, notify func()) (*command.Service, error) {
	priv, err := signingKey(cfg, log)
	if err != nil {
		return nil, err
	}
	var responders []killswitch.PublicKey
	for _, path := range cfg.KillSwitch.ResponderKeys {
		pub, err := killswitch.LoadPublicKey(path)
		if err != nil {
			return nil, err
		}
		name := strings.TrimSuffix(filepath.Base(path), ".pub")
		responders = append(responders, killswitch.PublicKey{Role: killswitch.RoleResponder, Key: pub, Name: name})
	}
	svc, err := command.New(command.Options{
		Store: st, Key: priv, Responders: responders, Log: log, Notify: notify,
		Policy: killswitch.Policy{Approvals: cfg.KillSwitch.Approvals, MaxHosts: cfg.KillSwitch.MaxHosts,
			BudgetHosts: cfg.KillSwitch.BudgetHosts, BudgetWindow: cfg.KillSwitch.BudgetWindow},
		IssueRate: cfg.KillSwitch.IssueRate,
	})
	if err != nil {
		return nil, err
	}
	log.Info("kill-switch ready", "key_id", command.CollectorPublicKey(priv).ID,
		"responder_keys", len(responders), "approvals", cfg.KillSwitch.Approvals, "max_hosts", cfg.KillSwitch.MaxHosts,
		"budget_hosts", cfg.KillSwitch.BudgetHosts, "budget_window", cfg.KillSwitch.BudgetWindow)
	return svc, nil
}

func signingKey(cfg config.Config, log *slog.Logger) (ed25519.PrivateKey, error) {
	path := cfg.SigningKeyPath()
	priv, err := killswitch.LoadPrivateKey(path)
	if err == nil {
		return priv, nil
	}
	if cfg.KillSwitch.SigningKey != "" || !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	name := strings.TrimSuffix(config.SigningKeyFile, ".key")
	id, gerr := killswitch.GenerateKey(cfg.DataDir, name)
	if gerr != nil {
		if priv, err := killswitch.LoadPrivateKey(path); err == nil {
			return priv, nil // another collector process created it first
		}
		return nil, fmt.Errorf("create the kill-switch signing key: %w", gerr)
	}
	log.Info("created the kill-switch signing key", logkey.Path, path, "key_id", id)
	return killswitch.LoadPrivateKey(path)
}

func campaignTargets(c config.Campaign) killswitch.Targets {
	if len(c.Labels) > 0 {
		return killswitch.Targets{Labels: c.Labels}
	}
	return killswitch.Targets{All: true}
}
