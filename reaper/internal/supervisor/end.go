package supervisor

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/go-multierror"

	"github.com/reaper-init/reaper/reaper/instance"
	"github.com/reaper-init/reaper/reaper/logs"
	"github.com/reaper-init/reaper/reaper/record"
)

// report assembles the record.Report of a run that ends with code.
func (s *supervisor) report(code int) record.Report {
	r := record.Report{Command: s.cfg.Command, ExitCode: code,
		TimedOut: s.stop.machine != nil && s.stop.machine.TimedOut()}
	if s.startErr != nil {
		r.StartError = s.startErr.Error()
	}
	if s.cmd.reaped {
		r.CommandStatus = record.StatusOf(s.cmd.pid, s.cmd.status)
	}
	if s.stop.record != nil {
		r.Teardown = s.stop.record.Report(s.stopDeadline())
	}
	return r
}

// writeSummary appends the table of what COMMAND left to the step summary
// (GitHub Actions' $GITHUB_STEP_SUMMARY), when there is one and COMMAND
// left something.
func (s *supervisor) writeSummary(code int) error {
	if s.cfg.StepSummary == "" || s.stop.record == nil {
		return nil
	}
	return record.AppendSummary(s.cfg.StepSummary, s.report(code), time.Now())
}

// writeReport writes the --report file, if one was asked for.
func (s *supervisor) writeReport(code int) error {
	if s.cfg.ReportPath == "" {
		return nil
	}
	return record.Write(s.cfg.ReportPath, s.report(code))
}

// end writes the report and releases what the run took. The failures met
// at the end of a run (processes that outlived SIGKILL, the report, the
// cgroup, the lock) are collected and logged together.
func (s *supervisor) end(code int) {
	s.stopEscapees()
	var errs *multierror.Error
	if s.stop.record != nil {
		for _, p := range s.stop.record.Processes {
			if p.Survived {
				errs = multierror.Append(errs, fmt.Errorf("pid %d (%s) still runs after SIGKILL", p.Handle.PID, p.Describe()))
			}
		}
	}
	errs = multierror.Append(errs, s.writeReport(code))
	errs = multierror.Append(errs, s.writeSummary(code))
	errs = multierror.Append(errs, s.release())
	logErrors(s.log, errs)
}

// stopEscapees stops, at the end of a run without a cgroup, the processes
// that carry the run's marker yet are no longer below reaper: they escaped
// the teardown (see instance.Sweep's Escaped).
func (s *supervisor) stopEscapees() {
	if s.held.leaf != nil || !s.self.ownProc {
		return // the cgroup holds whatever escaped the tree; or /proc is not ours to search
	}
	escapees := s.newSweep()
	escapees.Escaped = s.held.marker
	escapees.Run()
}

// newSweep is a sweep of the run's instance that stops what it finds as
// the run's own stop does: the stop signal, the run's grace, SIGKILL.
func (s *supervisor) newSweep() *instance.Sweep {
	return &instance.Sweep{Name: s.held.instance, Self: s.self.pid, StopSignal: s.cfg.StopSignal,
		Grace: s.stop.budget.Grace, KillWait: killWait, Log: s.log}
}

// cleanUp releases what prepare took, when COMMAND does not start.
func (s *supervisor) cleanUp() {
	logErrors(s.log, s.release())
}

// release stops relaying notifications, removes the cgroup (once empty),
// drops the instance's lock and lets the guardian go.
func (s *supervisor) release() error {
	var errs *multierror.Error
	if s.held.relay != nil {
		s.held.relay.Close()
		s.held.relay = nil
	}
	if s.held.leaf != nil {
		if err := s.held.leaf.Remove(); err != nil {
			errs = multierror.Append(errs, fmt.Errorf("cannot remove the cgroup %s: %w", s.held.leaf.Dir, err))
		}
		s.held.leaf = nil
	}
	if s.held.lock != nil {
		if err := s.held.lock.Release(); err != nil {
			errs = multierror.Append(errs, fmt.Errorf("cannot release the instance lock: %w", err))
		}
		s.held.lock = nil
	}
	if s.held.guardian != nil { // last: the run is over
		if err := s.held.guardian.Release(); err != nil {
			errs = multierror.Append(errs, fmt.Errorf("cannot release the guardian: %w", err))
		}
		s.held.guardian = nil
	}
	return errs.ErrorOrNil()
}

// logErrors logs err, one error or several, as one error line.
func logErrors(log *logs.Logger, err error) {
	var errs *multierror.Error
	if errors.As(err, &errs) {
		errs.ErrorFormat = oneLine
		err = errs.ErrorOrNil()
	}
	if err != nil {
		log.Error("the run ended with errors", logs.Err(err))
	}
}

// oneLine formats several errors on one line: a log line is one line.
func oneLine(errs []error) string {
	parts := make([]string, len(errs))
	for i, err := range errs {
		parts[i] = err.Error()
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return fmt.Sprintf("%d errors: %s", len(parts), strings.Join(parts, "; "))
}
