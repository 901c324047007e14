package server

import (
	"net/http"
	"strconv"

	"github.com/tillwatch/tillwatch/collector/api"
)

// RulesSource is the signed rule bundle the collector serves; Current
// returns serial 0 when there is none.
type RulesSource interface {
	Current() (serial int64, bundle []byte, err error)
}

// handleSensorRules serves the bundle to a sensor that runs an older one
// (?have=SERIAL): 204 when it is current, 404 when there is none. The
// sensor checks the signature; the collector only hands it on.
func (s *Server) handleSensorRules(w http.ResponseWriter, r *http.Request) {
	if s.rules == nil {
		s.fail(w, r, http.StatusNotFound, "this collector serves no rule bundle (rules_bundle in its config)")
		return
	}
	serial, bundle, err := s.rules.Current()
	if err != nil {
		s.failErr(w, r, http.StatusServiceUnavailable, "rule bundle unavailable", err)
		return
	}
	if serial == 0 {
		s.fail(w, r, http.StatusNotFound, "this collector serves no rule bundle (rules_bundle in its config)")
		return
	}
	if v := r.URL.Query().Get("have"); v != "" {
		have, err := strconv.ParseInt(v, 10, 64)
		if err != nil || have < 0 {
			s.fail(w, r, http.StatusBadRequest, "have must be the serial the sensor runs (0 for none)")
			return
		}
		if have == serial {
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set(api.RulesSerialHeader, strconv.FormatInt(serial, 10))
	w.Write(bundle)
}

// rulesSerial is what heartbeats advertise (0 when there is no bundle or
// it cannot be read; the error surfaces on the rules route).
func (s *Server) rulesSerial() int64 {
	if s.rules == nil {
		return 0
	}
	serial, _, err := s.rules.Current()
	if err != nil {
		return 0
	}
	return serial
}
