//go:build !unix

package main

import "errors"

// reexec is not possible here: the sensor exits with an error and the
// service manager's recovery actions start it again with the new rules.
func reexec() error {
	return errors.New("restarting to load a new rule bundle: exiting so the service manager starts the sensor again")
}
