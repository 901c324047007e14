package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/tillwatch/tillwatch/collector/client"
	"github.com/tillwatch/tillwatch/internal/buildinfo"
	"github.com/tillwatch/tillwatch/internal/cfgfile"
	"github.com/tillwatch/tillwatch/sensor/identity"
)

// conn holds how the CLI reaches the collector: flags, else environment,
// else the config file.
type conn struct {
	config    string
	collector string
	tokenFile string
	ca        string
}

// cliConfig is the CLI's optional YAML config (-c).
type cliConfig struct {
	Collector string `yaml:"collector"`
	Token     string `yaml:"token"`
	CA        string `yaml:"ca"`
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	var c conn
	root := &cobra.Command{
		Use:           "tillwatch",
		Short:         "tillwatch CLI: query alerts and hosts, issue kill-switch commands, run the demo",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringVarP(&c.config, "config", "c", "", "YAML config file (keys: collector, token, ca)")
	pf.StringVar(&c.collector, "collector", "", "collector URL (env TILLWATCH_COLLECTOR)")
	pf.StringVar(&c.tokenFile, "token", "", "file holding an analyst or responder token (env TILLWATCH_TOKEN)")
	pf.StringVar(&c.ca, "ca", "", "the collector's ca.pem (env TILLWATCH_CA)")
	root.AddCommand(
		&cobra.Command{
			Use: "version", Short: "Print the version", Args: cobra.NoArgs,
			RunE: func(*cobra.Command, []string) error {
				fmt.Fprintln(stdout, buildinfo.String("tillwatch"))
				return nil
			},
		},
		alertsCmd(&c, stdout),
		hostsCmd(&c, stdout),
		killswitchCmd(&c, stdout),
		keysCmd(stdout),
		demoCmd(stdout),
		simulateCmd(stdout),
		rulesCmd(stdout),
		scanCmd(stdout, stderr),
	)
	return root
}

// client resolves flags > environment > config file and returns a client.
func (c *conn) client() (*client.Client, error) {
	var fileCfg cliConfig
	if c.config != "" {
		if err := cfgfile.Load(c.config, &fileCfg); err != nil {
			return nil, cfgfile.Usage(err)
		}
	}
	pick := func(flag, env, file string) string {
		if flag != "" {
			return flag
		}
		if v := os.Getenv(env); v != "" {
			return v
		}
		return file
	}
	url := pick(c.collector, "TILLWATCH_COLLECTOR", fileCfg.Collector)
	tokFile := pick(c.tokenFile, "TILLWATCH_TOKEN", fileCfg.Token)
	ca := pick(c.ca, "TILLWATCH_CA", fileCfg.CA)
	switch {
	case url == "":
		return nil, cfgfile.Usagef("no collector: give --collector URL or set TILLWATCH_COLLECTOR")
	case tokFile == "":
		return nil, cfgfile.Usagef("no token: give --token FILE or set TILLWATCH_TOKEN (create one with `tillwatch-collector token create --role analyst`)")
	case ca == "":
		return nil, cfgfile.Usagef("no CA: give --ca FILE (the collector's <data dir>/ca.pem) or set TILLWATCH_CA")
	}
	tok, err := identity.ReadToken(tokFile)
	if err != nil {
		return nil, cfgfile.Usage(err)
	}
	cl, err := client.New(client.Config{URL: url, CAFile: ca, Token: tok, Timeout: 30 * time.Second, UserAgent: "tillwatch-cli/" + buildinfo.Version})
	if err != nil {
		return nil, cfgfile.Usage(err)
	}
	return cl, nil
}
