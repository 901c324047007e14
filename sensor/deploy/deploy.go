// Package deploy holds what the tillwatch-sensor Debian package installs
// besides the binary: the systemd unit, the default configuration and the
// maintainer scripts. They are real files in this folder (read, diff and
// review them as such); build/packaging embeds them from here.
package deploy

import "embed"

// File names in Files.
const (
	Unit     = "tillwatch-sensor.service"
	Config   = "sensor.yaml"
	PostInst = "postinst"
	PreRm    = "prerm"
	PostRm   = "postrm"
)

// Files holds the unit, the configuration and the maintainer scripts.
//
//go:embed tillwatch-sensor.service sensor.yaml postinst prerm postrm
var Files embed.FS
