package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/eventlog"
	"golang.org/x/sys/windows/svc/mgr"

	"github.com/tillwatch/tillwatch/internal/cfgfile"
	"github.com/tillwatch/tillwatch/internal/cli"
)

// serviceName names the Windows service and its event log source.
const serviceName = "tillwatch-sensor"

// runService runs the sensor under the service control manager when this
// process was started by it (ok false otherwise: a console run). The
// command line is the one `service install` registered ("run -c FILE");
// Stop and Shutdown cancel the same context SIGTERM cancels on Linux, so
// the sensor drains its queues exactly as it does there. Its log goes to
// the Application event log (a service has no console).
func runService(args []string) (code int, ok bool) {
	is, err := svc.IsWindowsService()
	if err != nil || !is {
		return 0, false
	}
	if len(args) == 0 {
		args = []string{"run"}
	}
	var logw io.Writer = io.Discard
	if el, err := eventlog.Open(serviceName); err == nil {
		defer el.Close()
		logw = eventWriter{el}
	}
	h := &handler{args: args, log: logw}
	if err := svc.Run(serviceName, h); err != nil {
		fmt.Fprintf(logw, "tillwatch-sensor: service control manager: %v\n", err)
		return cfgfile.ExitRuntime, true
	}
	return h.code, true
}

// handler implements svc.Handler around the sensor's own command line.
type handler struct {
	args []string
	log  io.Writer
	code int
}

// Execute runs the command until it returns, cancelling it on Stop or
// Shutdown. A non-zero exit is reported as a service-specific error, so the
// event log shows it; recovery actions restart only after a crash or kill.
func (h *handler) Execute(_ []string, req <-chan svc.ChangeRequest, status chan<- svc.Status) (bool, uint32) {
	status <- svc.Status{State: svc.StartPending}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- cli.Execute(ctx, newRoot(h.log, h.log), h.args) }()
	status <- svc.Status{State: svc.Running, Accepts: svc.AcceptStop | svc.AcceptShutdown}
	for {
		select {
		case c := <-req:
			switch c.Cmd {
			case svc.Interrogate:
				status <- c.CurrentStatus
			case svc.Stop, svc.Shutdown:
				// The drain is bounded (the shipper's last send gives up
				// after 10s); the hint tells the SCM to wait for it.
				status <- svc.Status{State: svc.StopPending, WaitHint: 30000}
				cancel()
			}
		case err := <-done:
			h.code = cli.ExitCode(err)
			if err != nil {
				fmt.Fprintln(h.log, "tillwatch-sensor: "+cfgfile.OneLine(err))
			}
			return h.code != 0, uint32(h.code)
		}
	}
}

// eventWriter writes each log line as one event, at the level slog gave it.
type eventWriter struct{ l *eventlog.Log }

func (w eventWriter) Write(p []byte) (int, error) {
	msg := strings.TrimRight(string(p), "\r\n")
	var err error
	switch {
	case strings.Contains(msg, "level=ERROR"), strings.Contains(msg, `"level":"ERROR"`), strings.HasPrefix(msg, "tillwatch-sensor: "):
		err = w.l.Error(3, msg)
	case strings.Contains(msg, "level=WARN"), strings.Contains(msg, `"level":"WARN"`):
		err = w.l.Warning(2, msg)
	default:
		err = w.l.Info(1, msg)
	}
	return len(p), err
}

// serviceCommands are `service install` and `service uninstall`.
func serviceCommands(stdout io.Writer) []*cobra.Command {
	cmd := &cobra.Command{Use: "service", Short: "Install or remove the tillwatch-sensor Windows service"}
	var config string
	install := &cobra.Command{
		Use:   "install",
		Short: "Register the sensor as an automatically started service running `run -c FILE`",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			if config, err = filepath.Abs(config); err != nil {
				return cfgfile.Usagef("--config: %v", err)
			}
			m, err := mgr.Connect()
			if err != nil {
				return cfgfile.Usagef("connect to the service control manager: %v (run as Administrator)", err)
			}
			defer m.Disconnect()
			if s, err := m.OpenService(serviceName); err == nil {
				s.Close()
				return cfgfile.Usagef("service %s exists already: run `tillwatch-sensor service uninstall` first", serviceName)
			}
			s, err := m.CreateService(serviceName, exe, mgr.Config{
				DisplayName: "tillwatch sensor",
				Description: "tillwatch endpoint sensor: detects and stops supply-chain attacks on this till",
				StartType:   mgr.StartAutomatic,
			}, "run", "-c", config)
			if err != nil {
				return fmt.Errorf("create service: %w", err)
			}
			defer s.Close()
			// Restart after a crash or a kill, like Restart=on-failure on Linux.
			restart := mgr.RecoveryAction{Type: mgr.ServiceRestart, Delay: 5 * time.Second}
			if err := s.SetRecoveryActions([]mgr.RecoveryAction{restart, restart, restart}, uint32((24 * time.Hour).Seconds())); err != nil {
				return errors.Join(fmt.Errorf("set recovery actions: %w", err), s.Delete())
			}
			if err := eventlog.InstallAsEventCreate(serviceName, eventlog.Error|eventlog.Warning|eventlog.Info); err != nil {
				return errors.Join(fmt.Errorf("register the event log source: %w", err), s.Delete())
			}
			fmt.Fprintf(stdout, "installed service %s: %s run -c %s\nstart it with: sc.exe start %s\n", serviceName, exe, config, serviceName)
			return nil
		},
	}
	install.Flags().StringVarP(&config, "config", "c", filepath.Join(os.Getenv("ProgramData"), "tillwatch", "sensor.yaml"), "YAML config file the service runs with")
	uninstall := &cobra.Command{
		Use:   "uninstall",
		Short: "Stop and remove the tillwatch-sensor service (configuration and state stay)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			m, err := mgr.Connect()
			if err != nil {
				return cfgfile.Usagef("connect to the service control manager: %v (run as Administrator)", err)
			}
			defer m.Disconnect()
			s, err := m.OpenService(serviceName)
			if err != nil {
				return cfgfile.Usagef("service %s is not installed", serviceName)
			}
			defer s.Close()
			_, _ = s.Control(svc.Stop) // not running is fine
			if err := s.Delete(); err != nil {
				return fmt.Errorf("delete service: %w", err)
			}
			_ = eventlog.Remove(serviceName)
			fmt.Fprintf(stdout, "removed service %s\n", serviceName)
			return nil
		},
	}
	cmd.AddCommand(install, uninstall)
	return []*cobra.Command{cmd}
}
