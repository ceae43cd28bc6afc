package console

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"
)

// page is one page's templates: the layout and the page's "content".
type page struct{ t *template.Template }

var pageNames = []string{"fleet", "games", "game", "jobs", "job", "activity", "login", "error"}

var funcs = template.FuncMap{
	"printable":  printable,
	"clip":       func(n int, s string) string { return clip(s, n) },
	"stamp":      stamp,
	"stampPtr":   stampPtr,
	"str":        str,
	"short":      shortID,
	"tone":       statusTone,
	"ago":        ago,
	"trimPrefix": strings.TrimPrefix,
	// args passes several values to a sub-template: args "J" job "F" $.
	"args": func(kv ...any) (map[string]any, error) {
		m := map[string]any{}
		for i := 0; i+1 < len(kv); i += 2 {
			k, ok := kv[i].(string)
			if !ok {
				return nil, fmt.Errorf("args: key %v is not a string", kv[i])
			}
			m[k] = kv[i+1]
		}
		return m, nil
	},
	"list": func(v ...int) []int { return v },
	// query builds a link's query string from key/value pairs, leaving
	// out empty values.
	"query": func(kv ...string) string {
		v := url.Values{}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] != "" {
				v.Set(kv[i], kv[i+1])
			}
		}
		if len(v) == 0 {
			return ""
		}
		return "?" + v.Encode()
	},
}

func parsePages() (map[string]*page, error) {
	pages := map[string]*page{}
	for _, name := range pageNames {
		t, err := template.New(name).Funcs(funcs).ParseFS(webFS, "web/templates/layout.html", "web/templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console: parse the %s page: %w", name, err)
		}
		pages[name] = &page{t: t}
	}
	return pages, nil
}

// frame is what the layout needs besides the page's own data.
type frame struct {
	Title string
	Nav   string
	// Live names what the page shows, for console.js: it refreshes the
	// page's live region when the live stream reports a change.
	Live     string
	LiveGame string
	Actions  bool
	User     string
	Via      string
	CSRF     string
	Version  string
	Path     string
	Data     any
}

// render writes a page, or only its live region when console.js asks for
// it (X-Console-Fragment), with the given status.
func (s *Server) render(w http.ResponseWriter, r *http.Request, name string, status int, f frame) {
	f.Actions = s.opts.Actions
	f.Version = s.opts.Version
	f.Path = r.URL.RequestURI()
	if who, ok := s.auth.identify(r); ok {
		f.User, f.Via = who.user, who.via
		f.CSRF = s.auth.csrfToken(who)
	}
	tmpl := "layout"
	if r.Header.Get("X-Console-Fragment") == "1" {
		tmpl = "content"
	}
	var buf bytes.Buffer
	if err := s.pages[name].t.ExecuteTemplate(&buf, tmpl, f); err != nil {
		s.log.Error("console: render", "page", name, "err", err)
		http.Error(w, "the page could not be rendered; the console's log says why", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// errorPage shows a problem with the request (bad filter, unknown id) or
// with the database.
func (s *Server) errorPage(w http.ResponseWriter, r *http.Request, status int, msg string) {
	if status >= 500 {
		s.log.Error("console: request failed", "path", r.URL.Path, "err", msg)
	}
	s.render(w, r, "error", status, frame{Title: http.StatusText(status), Data: struct {
		Status  int
		Message string
	}{status, msg}})
}
