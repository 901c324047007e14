// Package config is the collector's configuration: a typed struct with
// defaults, loaded strictly from YAML and validated all at once so an
// operator sees every mistake in one run.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/tillwatch/tillwatch/internal/cfgfile"
)

// Defaults. The listen address is loopback so a collector started without
// a config file exposes nothing; set listen: ":8443" to serve the fleet.
const (
	DefaultListen            = "127.0.0.1:8443"
	DefaultDataDir           = "./tillwatch-data"
	DefaultHeartbeatInterval = 30 * time.Second
	DBFile                   = "tillwatch.db"
	SQLiteScheme             = "sqlite:"
)

// esNamespaceRE is what Elasticsearch accepts in a data stream namespace
// (no '-', which separates the parts of the name) and in an index name.
var esNamespaceRE = regexp.MustCompile(`^[a-z0-9_]{1,64}$`)

// Config is the collector's configuration file.
type Config struct {
	// Listen is the HTTPS listen address (host:port).
	Listen string `yaml:"listen"`
	// DataDir holds the CA, server certificate and (by default) the database.
	DataDir string `yaml:"data_dir"`
	// Store is "sqlite:PATH"; empty means sqlite:<data_dir>/tillwatch.db.
	Store string `yaml:"store"`
	// Elasticsearch is the URL of an Elasticsearch cluster to store into
	// instead of SQLite (mutually exclusive with store).
	Elasticsearch string `yaml:"elasticsearch"`
	// ElasticsearchNamespace is the data stream namespace and the suffix
	// of the state indices; empty means "default". Collectors sharing one
	// cluster for different fleets (or tests) use one namespace each.
	ElasticsearchNamespace string `yaml:"elasticsearch_namespace"`
	TLS                    TLS    `yaml:"tls"`
	// HeartbeatInterval is the interval sensors are told to heartbeat at.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// SilenceAfter is how long a sensor may stay unheard before the
	// collector raises a "sensor silenced" alert.
	SilenceAfter time.Duration `yaml:"silence_after"`
	Log          Log           `yaml:"log"`
	KillSwitch   KillSwitch    `yaml:"killswitch"`
	Campaign     Campaign      `yaml:"campaign"`
	// RulesBundle is the signed rule bundle served to sensors.
	RulesBundle RulesBundle `yaml:"rules_bundle"`
}

// RulesBundle names the bundle file (tillwatch rules bundle) and,
// optionally, the rule-signing keys the collector checks it against
// before serving it.
type RulesBundle struct {
	File string   `yaml:"file"`
	Keys []string `yaml:"keys"`
}

// Campaign is fleet correlation: the same rule, RMM command line or
// payload hash on Hosts hosts within Window is a campaign.
type Campaign struct {
	Hosts       int           `yaml:"hosts"`
	Window      time.Duration `yaml:"window"`
	MinSeverity int           `yaml:"min_severity"`
	// Action is alert (default), disable-rmm or isolate-host.
	Action string `yaml:"action"`
	// Labels restricts the automatic command to hosts with these labels;
	// empty means every host.
	Labels map[string]string `yaml:"labels"`
	DryRun bool              `yaml:"dry_run"`
	// RMMProduct is the chain's RMM tool (catalog id, e.g. kaseya-vsa),
	// disabled when the alerts behind a campaign name none.
	RMMProduct string `yaml:"rmm_product"`
}

// KillSwitch configures signed fleet commands.
type KillSwitch struct {
	// SigningKey is the collector's Ed25519 key (PKCS #8 PEM); empty means
	// <data_dir>/killswitch-signing.key, created on first start. Every
	// collector sharing one store must use the same key: sensors pin it.
	SigningKey string `yaml:"signing_key"`
	// ResponderKeys are the .pub files of the people who may approve
	// commands (tillwatch keys gen); sensors pin the same files.
	ResponderKeys []string `yaml:"responder_keys"`
	// Approvals is M, the distinct responders needed for reversing
	// actions and for destructive ones beyond MaxHosts (default 2).
	Approvals int `yaml:"approvals"`
	// MaxHosts bounds kill-process, quarantine-file and isolate-host by
	// one key (default 5).
	MaxHosts int `yaml:"max_hosts"`
	// IssueRate is how many commands one token may issue per minute.
	IssueRate int `yaml:"issue_rate"`
	// BudgetHosts is how many distinct hosts one responder key may hit
	// with single-key destructive commands per BudgetWindow, fleet-wide;
	// a second responder's approval lifts it.
	BudgetHosts  int           `yaml:"budget_hosts"`
	BudgetWindow time.Duration `yaml:"budget_window"`
}

// SigningKeyFile is the default signing key's name in the data dir.
const SigningKeyFile = "killswitch-signing.key"

// SigningKeyPath is the configured key or the default in the data dir.
func (c Config) SigningKeyPath() string {
	if c.KillSwitch.SigningKey != "" {
		return c.KillSwitch.SigningKey
	}
	return filepath.Join(c.DataDir, SigningKeyFile)
}

// TLS configures the server certificate.
type TLS struct {
	// ExtraSANs are DNS names or IP addresses sensors use to reach the
	// collector, added to the server certificate.
	ExtraSANs []string `yaml:"extra_sans"`
}

// Log configures logging to stderr.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text, json
}

// Default returns the configuration used when no file is given.
func Default() Config {
	return Config{
		Listen:            DefaultListen,
		DataDir:           DefaultDataDir,
		HeartbeatInterval: DefaultHeartbeatInterval,
		SilenceAfter:      5 * time.Minute,
		Log:               Log{Level: "info", Format: "text"},
		KillSwitch:        KillSwitch{Approvals: 2, MaxHosts: 5, IssueRate: 10, BudgetHosts: 10, BudgetWindow: time.Hour},
		Campaign:          Campaign{Hosts: 3, Window: 10 * time.Minute, MinSeverity: 47, Action: "alert"},
	}
}

// Load reads path over the defaults. Errors are usage errors (exit 2).
func Load(path string) (Config, error) {
	c := Default()
	if err := cfgfile.Load(path, &c); err != nil {
		return Config{}, cfgfile.Usage(err)
	}
	return c, nil
}

// Validate reports every problem, each naming its key.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf(key+": "+format, args...))
	}
	if host, port, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen", "%q is not host:port (e.g. %s or :8443)", c.Listen, DefaultListen)
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		bad("listen", "port %q is not a number from 0 to 65535", port)
	} else if host != "" && net.ParseIP(host) == nil && !validDNSName(host) {
		bad("listen", "host %q is neither an IP address nor a host name", host)
	}
	if strings.TrimSpace(c.DataDir) == "" {
		bad("data_dir", "must not be empty")
	}
	if c.Store != "" {
		path, ok := strings.CutPrefix(c.Store, SQLiteScheme)
		if !ok {
			bad("store", "%q must be sqlite:PATH (Elasticsearch is configured with elasticsearch: URL)", c.Store)
		} else if strings.TrimSpace(path) == "" {
			bad("store", "sqlite: needs a database path, e.g. sqlite:/var/lib/tillwatch/tillwatch.db")
		}
	}
	if c.Elasticsearch != "" {
		u, err := url.Parse(c.Elasticsearch)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("elasticsearch", "%q is not an http(s) URL like https://127.0.0.1:9200", c.Elasticsearch)
		}
		if c.Store != "" {
			bad("elasticsearch", "set either store or elasticsearch, not both")
		}
	}
	if c.ElasticsearchNamespace != "" {
		if c.Elasticsearch == "" {
			bad("elasticsearch_namespace", "only applies with elasticsearch: URL")
		} else if !esNamespaceRE.MatchString(c.ElasticsearchNamespace) {
			bad("elasticsearch_namespace", "%q must be 1-64 of a-z, 0-9 and _", c.ElasticsearchNamespace)
		}
	}
	for i, n := range c.TLS.ExtraSANs {
		if net.ParseIP(n) == nil && !validDNSName(n) {
			bad(fmt.Sprintf("tls.extra_sans[%d]", i), "%q is neither an IP address nor a DNS name", n)
		}
	}
	if c.SilenceAfter < 2*c.HeartbeatInterval {
		bad("silence_after", "%s must be at least twice heartbeat_interval (%s), or every late heartbeat is an alert", c.SilenceAfter, c.HeartbeatInterval)
	}
	if c.HeartbeatInterval < 5*time.Second || c.HeartbeatInterval > time.Hour {
		bad("heartbeat_interval", "%s must be between 5s and 1h", c.HeartbeatInterval)
	}
	if c.KillSwitch.Approvals < 1 || c.KillSwitch.Approvals > 16 {
		bad("killswitch.approvals", "%d must be from 1 to 16", c.KillSwitch.Approvals)
	}
	if c.KillSwitch.MaxHosts < 1 {
		bad("killswitch.max_hosts", "%d must be at least 1", c.KillSwitch.MaxHosts)
	}
	if c.KillSwitch.BudgetHosts < 1 || c.KillSwitch.BudgetHosts > 1000000 {
		bad("killswitch.budget_hosts", "%d must be from 1 to 1000000", c.KillSwitch.BudgetHosts)
	}
	if c.KillSwitch.BudgetWindow < time.Minute || c.KillSwitch.BudgetWindow > 7*24*time.Hour {
		bad("killswitch.budget_window", "%s must be from 1m to 168h", c.KillSwitch.BudgetWindow)
	}
	if c.KillSwitch.IssueRate < 1 || c.KillSwitch.IssueRate > 10000 {
		bad("killswitch.issue_rate", "%d must be from 1 to 10000 per minute", c.KillSwitch.IssueRate)
	}
	for i, k := range c.KillSwitch.ResponderKeys {
		if strings.TrimSpace(k) == "" {
			bad(fmt.Sprintf("killswitch.responder_keys[%d]", i), "empty path")
		}
	}
	if c.Campaign.Hosts < 2 {
		bad("campaign.hosts", "%d must be at least 2 (one host is not a campaign)", c.Campaign.Hosts)
	}
	if c.Campaign.Window < time.Minute || c.Campaign.Window > 24*time.Hour {
		bad("campaign.window", "%s must be from 1m to 24h", c.Campaign.Window)
	}
	if c.Campaign.MinSeverity < 1 || c.Campaign.MinSeverity > 100 {
		bad("campaign.min_severity", "%d must be from 1 to 100", c.Campaign.MinSeverity)
	}
	switch c.Campaign.Action {
	case "alert", "disable-rmm", "isolate-host":
	default:
		bad("campaign.action", "%q must be alert, disable-rmm or isolate-host", c.Campaign.Action)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q must be debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "%q must be text or json", c.Log.Format)
	}
	return errors.Join(errs...)
}

// SQLitePath is the database file: the store path, or the default under
// the data dir. Empty when Elasticsearch is configured.
func (c Config) SQLitePath() string {
	if c.Elasticsearch != "" {
		return ""
	}
	if p, ok := strings.CutPrefix(c.Store, SQLiteScheme); ok && p != "" {
		return p
	}
	return filepath.Join(c.DataDir, DBFile)
}

// validDNSName accepts host names and wildcard-free DNS names.
func validDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}
