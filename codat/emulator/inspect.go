package emulator

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// inspectPrefix holds the emulator's own endpoints. They are not Codat's,
// need no authentication, and never show a raw key except the one made
// by a POST to /_emulator/keys, to its caller.
const inspectPrefix = "/_emulator"

// Reports served under /_emulator/.
type (
	// KeysReport is GET /_emulator/keys.
	KeysReport struct {
		Keys   []KeyRecord `json:"keys"`
		Active int         `json:"active"`
	}
	// EventsReport is GET /_emulator/events[?since=SEQ].
	EventsReport struct {
		Events []Event `json:"events"`
	}
	// ViolationsReport is GET /_emulator/violations.
	ViolationsReport struct {
		Violations []Violation `json:"violations"`
	}
	// PortalKey is the answer to POST /_emulator/keys.
	PortalKey struct {
		ID          string `json:"id"`
		Name        string `json:"name,omitempty"`
		APIKey      string `json:"apiKey"`
		CreatedDate string `json:"createdDate"`
	}
)

func (s *Server) serveInspect(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, inspectPrefix)
	switch {
	case path == "/keys" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, KeysReport{Keys: s.Keys(), Active: s.ActiveKeys()})
	case path == "/keys" && r.Method == http.MethodPost:
		var req struct {
			Name string `json:"name"`
		}
		if err := decodeStrict(r.Body, &req); err != nil && !errors.Is(err, io.EOF) {
			writeJSON(w, http.StatusBadRequest, inspectError(err.Error()))
			return
		}
		k, err := s.addPortalKey(req.Name)
		switch {
		case errors.Is(err, errPortalName):
			writeJSON(w, http.StatusBadRequest, inspectError(err.Error()))
			return
		case err != nil:
			writeJSON(w, http.StatusConflict, inspectError(err.Error()))
			return
		}
		writeJSON(w, http.StatusCreated, PortalKey{ID: k.id, Name: k.name, APIKey: k.raw, CreatedDate: k.created.Format(time.RFC3339)})
	case strings.HasPrefix(path, "/keys/") && r.Method == http.MethodDelete:
		if err := s.DeletePortalKey(strings.TrimPrefix(path, "/keys/")); err != nil {
			writeJSON(w, http.StatusConflict, inspectError(err.Error()))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case path == "/events" && r.Method == http.MethodGet:
		since := 0
		if v := r.URL.Query().Get("since"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				writeJSON(w, http.StatusBadRequest, inspectError("since: want a sequence number"))
				return
			}
			since = n
		}
		events := s.Events(since)
		if events == nil {
			events = []Event{}
		}
		writeJSON(w, http.StatusOK, EventsReport{Events: events})
	case path == "/rate" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, s.Rate())
	case path == "/violations" && r.Method == http.MethodGet:
		v := s.Violations()
		if v == nil {
			v = []Violation{}
		}
		writeJSON(w, http.StatusOK, ViolationsReport{Violations: v})
	case path == "/faults" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, s.Faults())
	case path == "/faults" && r.Method == http.MethodPost:
		var f Faults
		if err := decodeStrict(r.Body, &f); err != nil {
			writeJSON(w, http.StatusBadRequest, inspectError("faults: "+err.Error()))
			return
		}
		if err := s.SetFaults(f); err != nil {
			writeJSON(w, http.StatusBadRequest, inspectError("faults: "+err.Error()))
			return
		}
		s.log.Info("faults set", "faults", f)
		writeJSON(w, http.StatusOK, s.Faults())
	default:
		writeJSON(w, http.StatusNotFound, inspectError("no emulator endpoint "+r.Method+" "+r.URL.Path))
	}
}

func decodeStrict(r io.Reader, v any) error {
	dec := json.NewDecoder(io.LimitReader(r, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

func inspectError(msg string) map[string]string { return map[string]string{"error": msg} }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
