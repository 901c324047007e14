package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"

	"github.com/tillwatch/tillwatch/rules"
	"github.com/tillwatch/tillwatch/sensor/config"
)

// The versions a sensor reports in every heartbeat (api.Heartbeat), so the
// SOC can see which tills run which configuration and rule set:
//
//	config_version  first 12 hex digits of SHA-256(json.Marshal(effective config))
//	rules_version   "builtin-" + 12 hex of SHA-256(built-in rule archive)
//	                [+ "+" + 12 hex of the extra rule folders' content]
//
// The extra folders' digest covers, folder by folder in configured order
// (later folders may override earlier ones), the sorted slash-separated
// relative path and the SHA-256 of every regular file (symlinks to files
// followed), so equal content gives equal versions wherever the folders
// live. A file over ruleHashMaxFile counts by path and size only. When the
// walk stops at ruleHashMaxFiles files or ruleHashMaxBytes read, the suffix
// is "+partial-<12 hex>" of what was covered.
const (
	versionHexLen    = 12
	ruleHashMaxFile  = 4 << 20
	ruleHashMaxFiles = 10_000
	ruleHashMaxBytes = 256 << 20
)

// configVersion identifies the effective configuration. json.Marshal is
// deterministic for config.Config: fields in declaration order, map keys
// sorted. It fails only on a value JSON cannot carry (a NaN float).
func configVersion(cfg config.Config) (string, error) {
	b, err := json.Marshal(cfg)
	if err != nil {
		// Only a NaN can get here (config.Validate lets yara.sweep_cpu: .nan through).
		return "", fmt.Errorf("config: a value cannot be encoded for config_version (a NaN number such as yara.sweep_cpu: .nan?): %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:versionHexLen], nil
}

// rulesVersion names the rule set: the built-in archive plus extraDirs.
func rulesVersion(extraDirs []string) (string, error) {
	return rulesVersionWith(extraDirs, ruleHashLimits{ruleHashMaxFile, ruleHashMaxFiles, ruleHashMaxBytes})
}

func rulesVersionWith(extraDirs []string, lim ruleHashLimits) (string, error) {
	v := "builtin-" + rules.ArchiveSHA256()[:versionHexLen]
	if len(extraDirs) == 0 {
		return v, nil
	}
	sum, partial, err := hashRuleDirs(extraDirs, lim)
	if err != nil {
		return "", err
	}
	if partial {
		return v + "+partial-" + sum[:versionHexLen], nil
	}
	return v + "+" + sum[:versionHexLen], nil
}

type ruleHashLimits struct {
	file  int64 // larger files count by path and size
	files int   // stop after this many files
	bytes int64 // stop once this much was read
}

// hashRuleDirs returns the hex digest of dirs' content (see the top of the
// file) and whether a limit cut it short.
func hashRuleDirs(dirs []string, lim ruleHashLimits) (sum string, partial bool, err error) {
	h := sha256.New()
	files, read := 0, int64(0)
	for i, dir := range dirs {
		// os.DirFS follows a symlinked root and symlinks inside, as the
		// rule loaders do.
		fsys := os.DirFS(dir)
		var names []string
		err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				return nil
			}
			if d.Type()&fs.ModeSymlink != 0 {
				// Only links to regular files count; linked folders are not
				// descended into (no loops).
				if fi, err := fs.Stat(fsys, p); err != nil || !fi.Mode().IsRegular() {
					return nil
				}
			} else if !d.Type().IsRegular() {
				return nil
			}
			if files == lim.files {
				partial = true
				return fs.SkipAll
			}
			files++
			names = append(names, p)
			return nil
		})
		if err != nil {
			return "", false, fmt.Errorf("rules version: %s: %w", dir, err)
		}
		// WalkDir's order is per folder ("a/x" before "a.txt"); sort the
		// whole paths so the digest does not depend on how it walks.
		slices.Sort(names)
		fmt.Fprintf(h, "dir %d\n", i)
		for _, p := range names {
			if read >= lim.bytes {
				partial = true
				break
			}
			fsum, n, err := hashRuleFile(fsys, p, lim.file)
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed since the walk
			}
			if err != nil {
				return "", false, fmt.Errorf("rules version: %s: %w", dir, err)
			}
			read += n
			// Length-prefixed path: no name can imitate another entry.
			fmt.Fprintf(h, "%d %s %s\n", len(p), p, fsum)
		}
		if partial {
			break
		}
	}
	return hex.EncodeToString(h.Sum(nil)), partial, nil
}

// hashRuleFile returns the hex SHA-256 of one file and the bytes read, or
// "size-<n>" for a file over maxFile.
func hashRuleFile(fsys fs.FS, p string, maxFile int64) (string, int64, error) {
	f, err := fsys.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", 0, err
	}
	if fi.Size() > maxFile {
		return fmt.Sprintf("size-%d", fi.Size()), 0, nil
	}
	h := sha256.New()
	// Bounded even if the file grows after Stat.
	n, err := io.Copy(h, io.LimitReader(f, maxFile+1))
	if err != nil {
		return "", n, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
