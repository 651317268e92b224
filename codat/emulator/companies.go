package emulator

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Codat's company endpoints, the least a consumer of a key calls
// (docs/design.md#codat-api): GET /companies lists, POST /companies
// creates. They check the key as every Codat endpoint does, so that a
// test can watch an application keep working across rotations; faults
// apply to the key operations only.
const (
	OpListCompanies  = "list-companies"
	OpCreateCompany  = "create-company"
	companiesPath    = "/companies"
	defaultPageSize  = 100
	maxPageSize      = 5000
	msgMalformedPage = "The query parameters are not valid: page must be at least 1 and pageSize between 1 and 5000."
	msgCompanyName   = "The company name must not be empty."
)

// company is Codat's Company, with the fields a company without
// connections has.
type company struct {
	ID              string   `json:"id"`
	Name            string   `json:"name"`
	Description     string   `json:"description,omitempty"`
	Redirect        string   `json:"redirect"`
	Created         string   `json:"created"`
	DataConnections []string `json:"dataConnections"`
}

type halRef struct {
	Href string `json:"href"`
}

// companiesPage is Codat's paged list: results and its PagingInfo.
type companiesPage struct {
	Results      []company         `json:"results"`
	PageNumber   int               `json:"pageNumber"`
	PageSize     int               `json:"pageSize"`
	TotalResults int               `json:"totalResults"`
	Links        map[string]halRef `json:"_links"`
}

// listCompanies answers GET /companies?page=&pageSize= (1 and 100 by
// default, as Codat's).
func (s *Server) listCompanies(query url.Values) response {
	page, okPage := queryInt(query, "page", 1)
	size, okSize := queryInt(query, "pageSize", defaultPageSize)
	if !okPage || !okSize || page < 1 || size < 1 || size > maxPageSize {
		return errorResponse(http.StatusBadRequest, msgMalformedPage, nil)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	results := []company{}
	if from := (page - 1) * size; from < len(s.companies) {
		results = append(results, s.companies[from:min(from+size, len(s.companies))]...)
	}
	link := func(p int) halRef {
		return halRef{Href: companiesPath + "?page=" + strconv.Itoa(p) + "&pageSize=" + strconv.Itoa(size)}
	}
	links := map[string]halRef{"self": {Href: companiesPath}, "current": link(page)}
	if page > 1 {
		links["previous"] = link(page - 1)
	}
	if page*size < len(s.companies) {
		links["next"] = link(page + 1)
	}
	return response{status: http.StatusOK, body: companiesPage{
		Results: results, PageNumber: page, PageSize: size, TotalResults: len(s.companies), Links: links,
	}}
}

// createCompany answers POST /companies {"name": ..., "description": ...}:
// 200 with the company, 400 without a name.
func (s *Server) createCompany(body []byte) response {
	var req struct {
		Name        string `json:"name"`
		Description string `json:"description"`
	}
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&req); err != nil {
		return errorResponse(http.StatusBadRequest, msgBadBody, nil)
	}
	if strings.TrimSpace(req.Name) == "" {
		return errorResponse(http.StatusBadRequest, msgCompanyName, &validation{Errors: []validationItem{{
			ItemID: "name", Message: msgCompanyName, ValidatorName: "Required",
		}}})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id := newID()
	c := company{
		ID: id, Name: req.Name, Description: req.Description,
		Redirect: "https://link.codat.io/company/" + id,
		Created:  s.now().Format(time.RFC3339), DataConnections: []string{},
	}
	s.companies = append(s.companies, c)
	return response{status: http.StatusOK, body: c}
}

// queryInt reads an integer parameter, def when absent.
func queryInt(q url.Values, name string, def int) (int, bool) {
	v := q.Get(name)
	if v == "" {
		return def, true
	}
	n, err := strconv.Atoi(v)
	return n, err == nil
}
