package emulator_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/codat-rotator/codat-rotator/codat/emulator"
)

// wirePage is GET /companies as the tests read it back.
type wirePage struct {
	Results []struct {
		ID, Name, Description, Redirect, Created string
		DataConnections                          []any
	} `json:"results"`
	PageNumber   int                          `json:"pageNumber"`
	PageSize     int                          `json:"pageSize"`
	TotalResults int                          `json:"totalResults"`
	Links        map[string]map[string]string `json:"_links"`
}

func (h *harness) companies(tb testing.TB, key, query string) wirePage {
	tb.Helper()
	r := h.send(tb, as(key, http.MethodGet, "/companies"+query, ""))
	if r.status != http.StatusOK {
		tb.Fatalf("GET /companies%s: got %d %s, want 200", query, r.status, r.body)
	}
	var p wirePage
	if err := json.Unmarshal(r.body, &p); err != nil {
		tb.Fatalf("GET /companies%s: %v in %s", query, err, r.body)
	}
	return p
}

// TestCompanies: the endpoints an application calls with the key answer
// as Codat's do: a created company comes back in the paged list with
// Codat's paging fields and links.
func TestCompanies(t *testing.T) {
	h := newHarness(t, emulator.Options{})
	p := h.companies(t, h.key, "")
	if p.TotalResults != 0 || len(p.Results) != 0 || p.PageNumber != 1 || p.PageSize != 100 {
		t.Fatalf("empty list: got %+v, want page 1 of size 100 with nothing", p)
	}
	if got := p.Links["current"]["href"]; got != "/companies?page=1&pageSize=100" {
		t.Errorf("current link: got %q", got)
	}
	var ids []string
	for _, name := range []string{"Bank of Dave", "Toft stores"} {
		r := h.send(t, as(h.key, http.MethodPost, "/companies", `{"name":"`+name+`","description":"d"}`))
		if r.status != http.StatusOK {
			t.Fatalf("POST /companies: got %d %s, want 200", r.status, r.body)
		}
		var c struct{ ID, Name, Redirect, Created string }
		if err := json.Unmarshal(r.body, &c); err != nil {
			t.Fatal(err)
		}
		if !uuidShape.MatchString(c.ID) || c.Name != name || c.Redirect != "https://link.codat.io/company/"+c.ID || c.Created != "2024-03-05T13:30:00Z" {
			t.Errorf("created company: got %+v", c)
		}
		ids = append(ids, c.ID)
	}
	p = h.companies(t, h.key, "?page=2&pageSize=1")
	if p.TotalResults != 2 || len(p.Results) != 1 || p.Results[0].ID != ids[1] || p.PageNumber != 2 || p.PageSize != 1 {
		t.Fatalf("page 2 of size 1: got %+v, want the second company", p)
	}
	if p.Results[0].DataConnections == nil {
		t.Errorf("dataConnections: got null, want []")
	}
	if got := p.Links["previous"]["href"]; got != "/companies?page=1&pageSize=1" {
		t.Errorf("previous link: got %q", got)
	}
	if _, ok := p.Links["next"]; ok {
		t.Errorf("last page has a next link: %v", p.Links)
	}
	for _, tt := range []struct {
		name string
		ex   exchange
		want int
	}{
		{"page 0", as(h.key, http.MethodGet, "/companies?page=0", ""), http.StatusBadRequest},
		{"page size over 5000", as(h.key, http.MethodGet, "/companies?pageSize=5001", ""), http.StatusBadRequest},
		{"no name", as(h.key, http.MethodPost, "/companies", `{"description":"x"}`), http.StatusBadRequest},
		{"not json", as(h.key, http.MethodPost, "/companies", `name=x`), http.StatusBadRequest},
		{"wrong method", as(h.key, http.MethodDelete, "/companies", ""), http.StatusMethodNotAllowed},
	} {
		r := h.send(t, tt.ex)
		if r.status != tt.want {
			t.Errorf("%s: got %d %s, want %d", tt.name, r.status, r.body, tt.want)
			continue
		}
		checkErrorBody(t, r, tt.want, "")
	}
}

// TestCompaniesRefuseADeletedKey: the endpoints an application calls
// check the key like the key endpoints: a deleted key gets Codat's 401,
// the event shows no key and the use is recorded as a violation; a live
// key still works.
func TestCompaniesRefuseADeletedKey(t *testing.T) {
	h := newHarness(t, emulator.Options{})
	old := h.create(t, h.key, "old")
	if h.companies(t, old.APIKey, "").TotalResults != 0 {
		t.Fatal("a fresh emulator lists companies")
	}
	if r := h.send(t, as(h.key, http.MethodDelete, "/apiKeys/"+old.ID, "")); r.status != http.StatusNoContent {
		t.Fatalf("delete: got %d %s", r.status, r.body)
	}
	for _, ex := range []exchange{
		as(old.APIKey, http.MethodGet, "/companies", ""),
		as(old.APIKey, http.MethodPost, "/companies", `{"name":"x"}`),
		{method: http.MethodGet, path: "/companies"},
	} {
		r := h.send(t, ex)
		if r.status != http.StatusUnauthorized {
			t.Fatalf("%s %s with a deleted or no key: got %d %s, want 401", ex.method, ex.path, r.status, r.body)
		}
		checkErrorBody(t, r, http.StatusUnauthorized, "")
	}
	if p := h.companies(t, h.key, ""); p.TotalResults != 0 {
		t.Errorf("a refused create made a company: %+v", p)
	}
	var refused int
	for _, e := range h.events(t) {
		if (e.Op == emulator.OpListCompanies || e.Op == emulator.OpCreateCompany) && e.Status == http.StatusUnauthorized {
			refused++
			if e.KeyID != "" {
				t.Errorf("a refused request is recorded with key %s", e.KeyID)
			}
		}
	}
	if refused != 3 {
		t.Errorf("refused company requests in the events: got %d, want 3", refused)
	}
	if got := violationsOf(h.violations(t), emulator.ViolationDeletedKeyUsed); len(got) != 2 || got[0].KeyID != old.ID {
		t.Errorf("deleted_key_used violations: got %+v, want 2 for %s", got, old.ID)
	}
}
