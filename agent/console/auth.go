package console

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/galaxy/rtmanager/rtmclient"
)

// sessionCookie holds a signed session of an operator who logged in with
// the token: the name they gave (for the log) and an expiry.
const (
	sessionCookie = "rtm_console_session"
	sessionLife   = 12 * time.Hour
	maxUserName   = 64
)

// identity is who makes a request: an operator logged in with the token
// (a session cookie), a user named by the trusted header, or a script
// presenting the token as a bearer.
type identity struct {
	user string
	via  string // "token", "header" or "bearer"
	// binding is what the CSRF token is tied to: the session cookie, or
	// the header's user. A bearer request needs none: a browser never
	// adds an Authorization header by itself.
	binding string
}

// auth checks tokens and signs sessions and CSRF tokens.
type auth struct {
	token  []byte // sha256 of the token; nil without one
	header string
	// key signs sessions and CSRF tokens. Derived from the token, so
	// that every console with the same token accepts the others'
	// sessions and a new token ends the old sessions; random otherwise.
	key []byte
}

func newAuth(token, header string) (*auth, error) {
	a := &auth{header: header}
	if token != "" {
		h := sha256.Sum256([]byte(token))
		a.token = h[:]
		k := sha256.Sum256([]byte("rtm-console-session\x00" + token))
		a.key = k[:]
		return a, nil
	}
	a.key = make([]byte, 32)
	if _, err := rand.Read(a.key); err != nil {
		return nil, fmt.Errorf("console: make a signing key: %w", err)
	}
	return a, nil
}

// tokenOK compares in constant time (of hashes, so the length leaks
// nothing either).
func (a *auth) tokenOK(got string) bool {
	if a.token == nil {
		return false
	}
	h := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(h[:], a.token) == 1
}

func (a *auth) mac(parts ...string) []byte {
	m := hmac.New(sha256.New, a.key)
	m.Write([]byte(strings.Join(parts, "\x00")))
	return m.Sum(nil)
}

// identify returns who makes r, if anyone the console trusts.
func (a *auth) identify(r *http.Request) (identity, bool) {
	if a.header != "" {
		if u := r.Header.Get(a.header); u != "" {
			return identity{user: clip(printable(u), maxUserName), via: "header", binding: "header\x00" + u}, true
		}
	}
	if bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && a.tokenOK(bearer) {
		return identity{user: "bearer token", via: "bearer"}, true
	}
	if c, err := r.Cookie(sessionCookie); err == nil && a.token != nil {
		if user, ok := a.verifySession(c.Value, time.Now()); ok {
			return identity{user: user, via: "token", binding: "session\x00" + c.Value}, true
		}
	}
	return identity{}, false
}

func (a *auth) session(user string, now time.Time) string {
	exp := strconv.FormatInt(now.Add(sessionLife).Unix(), 10)
	name := base64.RawURLEncoding.EncodeToString([]byte(user))
	return name + "." + exp + "." + base64.RawURLEncoding.EncodeToString(a.mac("session", name, exp))
}

func (a *auth) verifySession(v string, now time.Time) (string, bool) {
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return "", false
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || !hmac.Equal(sig, a.mac("session", parts[0], parts[1])) {
		return "", false
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || now.Unix() >= exp {
		return "", false
	}
	name, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return "", false
	}
	return string(name), true
}

// csrfToken is the token the identity's forms carry.
func (a *auth) csrfToken(id identity) string {
	if id.via == "bearer" {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString(a.mac("csrf", id.binding))
}

func (a *auth) csrfOK(r *http.Request, id identity) bool {
	if id.via == "bearer" {
		return true
	}
	got, err := base64.RawURLEncoding.DecodeString(r.PostFormValue("csrf"))
	return err == nil && hmac.Equal(got, a.mac("csrf", id.binding))
}

// localPath keeps a redirect on the console: a path, not another site.
func localPath(p string) string {
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.HasPrefix(p, "/\\") || strings.ContainsAny(p, "\r\n") {
		return "/"
	}
	return p
}

type loginData struct {
	Next    string
	Error   string
	Enabled bool
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, "login", http.StatusOK, frame{Title: "Log in", Data: loginData{
		Next: localPath(r.URL.Query().Get("next")), Enabled: s.opts.Actions && s.auth.token != nil,
	}})
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	next := localPath(r.PostFormValue("next"))
	if !s.opts.Actions || s.auth.token == nil {
		s.errorPage(w, r, http.StatusNotFound, "logging in with a token is not enabled on this console (--console-actions and RTM_CONSOLE_TOKEN)")
		return
	}
	user := strings.TrimSpace(r.PostFormValue("name"))
	if user == "" {
		user = "operator"
	}
	user = clip(printable(user), maxUserName)
	if !s.auth.tokenOK(r.PostFormValue("token")) {
		s.log.Warn("console: login refused: wrong token", "name", user, "remote", r.RemoteAddr)
		s.render(w, r, "login", http.StatusUnauthorized, frame{Title: "Log in", Data: loginData{Next: next, Error: "That token is not the console's token.", Enabled: true}})
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: s.auth.session(user, time.Now()), Path: "/", MaxAge: int(sessionLife.Seconds()),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
	s.log.Info("console: login", "who", user, "remote", r.RemoteAddr)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (s *Server) cancelJob(w http.ResponseWriter, r *http.Request) {
	s.act(w, r, "cancel", func(id int64) (string, string, error) {
		j, err := s.client.CancelJob(r.Context(), id)
		if err != nil {
			return "", "", err
		}
		done := "cancel-requested"
		if j.Status == rtmclient.JobCancelled {
			done = "cancelled"
		}
		return fmt.Sprintf("/jobs/%d?done=%s", id, done), string(j.Status), nil
	})
}

func (s *Server) retryJob(w http.ResponseWriter, r *http.Request) {
	s.act(w, r, "retry", func(id int64) (string, string, error) {
		j, err := s.client.RetryJob(r.Context(), id)
		if err != nil {
			return "", "", err
		}
		return fmt.Sprintf("/jobs/%d?retried=%d", j.ID, id), fmt.Sprintf("enqueued as job %d", j.ID), nil
	})
}

// act runs an action for an authenticated operator with a valid CSRF
// token, logs it with who asked, and redirects to the job it touched.
func (s *Server) act(w http.ResponseWriter, r *http.Request, action string, do func(id int64) (redirect, outcome string, err error)) {
	if !s.opts.Actions {
		s.log.Warn("console: action refused: actions are disabled", "action", action, "job", r.PathValue("id"), "remote", r.RemoteAddr)
		s.errorPage(w, r, http.StatusForbidden, "actions are disabled: this console is read-only (start it with --console-actions)")
		return
	}
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		s.errorPage(w, r, http.StatusBadRequest, "a job id is a positive number")
		return
	}
	who, ok := s.auth.identify(r)
	if !ok {
		s.log.Warn("console: action refused: not authenticated", "action", action, "job_id", id, "remote", r.RemoteAddr)
		s.errorPage(w, r, http.StatusUnauthorized, "log in with the console's token to "+action+" jobs")
		return
	}
	if !s.auth.csrfOK(r, who) {
		s.log.Warn("console: action refused: bad CSRF token", "action", action, "job_id", id, "who", who.user, "via", who.via, "remote", r.RemoteAddr)
		s.errorPage(w, r, http.StatusForbidden, "the form's CSRF token is missing or wrong: reload the page and try again")
		return
	}
	redirect, outcome, err := do(id)
	attrs := []any{"action", action, "job_id", id, "who", who.user, "via", who.via, "remote", r.RemoteAddr}
	if fwd := r.Header.Get("X-Forwarded-For"); fwd != "" {
		attrs = append(attrs, "forwarded_for", fwd)
	}
	if err != nil {
		s.log.Warn("console: action failed", append(attrs, "err", err)...)
		status := http.StatusInternalServerError
		switch {
		case errors.Is(err, rtmclient.ErrNotFound):
			status = http.StatusNotFound
		case errors.Is(err, rtmclient.ErrJobFinished), errors.Is(err, rtmclient.ErrJobNotRetryable), errors.Is(err, rtmclient.ErrInvalidJob):
			status = http.StatusConflict
		}
		s.errorPage(w, r, status, fmt.Sprintf("%s job %d: %v", action, id, err))
		return
	}
	s.log.Info("console: action", append(attrs, "outcome", outcome)...)
	http.Redirect(w, r, redirect, http.StatusSeeOther)
}
