package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/internal/cfgfile"
)

func TestDefaultIsValid(t *testing.T) {
	t.Parallel()
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:8443" || c.SQLitePath() != filepath.Join("tillwatch-data", "tillwatch.db") {
		t.Fatalf("defaults: %+v, db %s", c, c.SQLitePath())
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantKey []string // each must appear in the error
	}{
		{"ok any address", func(c *Config) { c.Listen = ":8443" }, nil},
		{"ok store", func(c *Config) { c.Store = "sqlite:/tmp/x.db" }, nil},
		{"ok es", func(c *Config) { c.Elasticsearch = "https://127.0.0.1:9200" }, nil},
		{"ok sans", func(c *Config) { c.TLS.ExtraSANs = []string{"collector.shop.example", "10.0.0.5", "::1"} }, nil},
		{"listen", func(c *Config) { c.Listen = "8443" }, []string{"listen:"}},
		{"listen port", func(c *Config) { c.Listen = "127.0.0.1:99999" }, []string{"listen:"}},
		{"data_dir", func(c *Config) { c.DataDir = " " }, []string{"data_dir:"}},
		{"store scheme", func(c *Config) { c.Store = "postgres://x" }, []string{"store:"}},
		{"store path", func(c *Config) { c.Store = "sqlite:" }, []string{"store:"}},
		{"es url", func(c *Config) { c.Elasticsearch = "127.0.0.1:9200" }, []string{"elasticsearch:"}},
		{"es and store", func(c *Config) { c.Elasticsearch = "http://es:9200"; c.Store = "sqlite:x.db" }, []string{"elasticsearch: set either"}},
		{"es namespace without es", func(c *Config) { c.ElasticsearchNamespace = "shop" }, []string{"elasticsearch_namespace: only applies"}},
		{"es namespace with a dash", func(c *Config) { c.Elasticsearch = "http://es:9200"; c.ElasticsearchNamespace = "a-b" }, []string{"elasticsearch_namespace:"}},
		{"sans", func(c *Config) { c.TLS.ExtraSANs = []string{"ok.example", "bad name"} }, []string{"tls.extra_sans[1]:"}},
		{"heartbeat", func(c *Config) { c.HeartbeatInterval = time.Second }, []string{"heartbeat_interval:"}},
		{"log", func(c *Config) { c.Log = Log{Level: "loud", Format: "xml"} }, []string{"log.level:", "log.format:"}},
		{"everything at once", func(c *Config) { c.Listen = "x"; c.DataDir = ""; c.Log.Level = "" }, []string{"listen:", "data_dir:", "log.level:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := Default()
			tt.mutate(&c)
			err := c.Validate()
			if len(tt.wantKey) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("invalid config accepted")
			}
			for _, k := range tt.wantKey {
				if !strings.Contains(err.Error(), k) {
					t.Errorf("error %q does not name %q", err, k)
				}
			}
		})
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c, err := Load(write("ok.yaml", "listen: \":9443\"\ndata_dir: /var/lib/tw\nheartbeat_interval: 1m\ntls:\n  extra_sans: [soc.example]\nlog:\n  format: json\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != ":9443" || c.HeartbeatInterval != time.Minute || c.Log.Format != "json" || c.Log.Level != "info" ||
		c.SQLitePath() != "/var/lib/tw/tillwatch.db" || c.TLS.ExtraSANs[0] != "soc.example" {
		t.Fatalf("loaded %+v", c)
	}
	_, err = Load(write("type.yaml", "tls:\n  extra_sans: [a]\nlog:\n  level: info\nheartbeat_interval: soon\n"))
	if err == nil || !strings.Contains(err.Error(), "heartbeat_interval (line 5): cannot unmarshal") {
		t.Fatalf("type error does not name the key: %v", err)
	}
	_, err = Load(write("typo.yaml", "lisen: :9443\n"))
	var ue *cfgfile.UsageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "lisen") {
		t.Fatalf("typo: %v", err)
	}
}
