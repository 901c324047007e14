package main

import (
	"crypto/ed25519"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/tillwatch/tillwatch/internal/cfgfile"
	"github.com/tillwatch/tillwatch/internal/killswitch"
	"github.com/tillwatch/tillwatch/internal/rulebundle"
)

// rulesBundleCmd lints a rule tree and packs it into a signed bundle the
// collector serves to the fleet (docs/rules.md, "Shipping rules").
func rulesBundleCmd(stdout io.Writer) *cobra.Command {
	var (
		serial         int64
		name, out, key string
	)
	cmd := &cobra.Command{
		Use:   "bundle [DIR]",
		Short: "Lint DIR (default ./rules) and pack it into a rule bundle signed with your rule-signing key",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			dir := "rules"
			if len(args) == 1 {
				dir = args[0]
			}
			if serial <= 0 || out == "" || key == "" {
				return cfgfile.Usagef("--serial (a number larger than the fleet's current bundle), --sign-with and --out are required")
			}
			if err := runRules(stdout, dir, true); err != nil {
				return fmt.Errorf("not bundling rules that fail their tests: %w", err)
			}
			priv, err := killswitch.LoadPrivateKey(key)
			if err != nil {
				return err
			}
			if name == "" {
				name = fmt.Sprintf("serial %d", serial)
			}
			b, m, err := rulebundle.Build(dir, serial, name, priv, time.Now())
			if err != nil {
				return err
			}
			if err := os.WriteFile(out, b, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "bundle %s: serial %d, %d files, archive sha256 %s, signed by %s\n",
				out, m.Serial, m.Files, m.ArchiveSHA256, killswitch.KeyID(priv.Public().(ed25519.PublicKey)))
			return nil
		},
	}
	f := cmd.Flags()
	f.Int64Var(&serial, "serial", 0, "bundle serial; sensors refuse one not larger than what they run")
	f.StringVar(&name, "name", "", "a name for people (default \"serial N\")")
	f.StringVar(&key, "sign-with", "", "your rule-signing private key (tillwatch keys gen)")
	f.StringVar(&out, "out", "", "file to write")
	return cmd
}
